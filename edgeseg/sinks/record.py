"""The one JSON record per result that every serializing sink (JSON lines, MQTT) publishes."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

from edgeseg.frame import Result
from edgeseg.instances import MaskFormat

# the sinks' threads get each result at about the same moment: the second to ask waits for the first's
# encoding instead of making its own
_ENCODING = threading.Lock()


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def result_record(
    result: Result, seq: int, mask_format: MaskFormat = "rle", class_names: Sequence[str] = ()
) -> dict[str, Any]:
    """A JSON-ready dict describing one result.

    Keys: ``seq`` (the sink's own 0-based count of records, so a consumer sees gaps), ``frame`` (the source's
    frame index), ``wall_time`` (capture time, Unix seconds), ``source``, ``file`` (the image file, only for
    image sequences), ``damaged`` (``true`` only when the input was partly decodable),
    ``config_version`` (the version of the live settings the frame was processed with), ``roi``,
    ``timings_ms`` (``preprocess``, ``infer``, ``decode``: time from the previous stamp to the end of that
    stage, queue waits included; ``latency``: capture to result), then ``height``, ``width`` and
    ``instances`` of :meth:`Instances.to_dict` (each instance also gets ``class_name`` when names are known),
    then ``events``: the frame's track events (:meth:`edgeseg.events.Event.to_dict`, in ``event_seq``
    order; ``[]`` when none). ``final: true`` marks the record that carries the events made when the
    pipeline stopped (its frame is the last frame again, with no instances).
    """
    frame, t = result.frame, result.times
    record: dict[str, Any] = {
        "seq": seq,
        "frame": frame.index,
        "wall_time": frame.wall_time,
        "source": frame.source,
        **({"file": frame.file} if frame.file is not None else {}),
        **({"damaged": True} if frame.damaged else {}),
        **({"final": True} if result.final else {}),
        "config_version": result.config_version,
        "roi": [float(v) for v in frame.roi],
        "timings_ms": {
            "preprocess": _ms(t.ms("captured", "preprocessed")),
            "infer": _ms(t.ms("preprocessed", "inferred")),
            "decode": _ms(t.ms("inferred", "decoded")),
            "latency": _ms(t.ms("captured", "published")),
        },
    }
    record.update(result.instances.to_dict(mask_format))
    if class_names:
        for item in record["instances"]:
            cid = item["class_id"]
            item["class_name"] = class_names[cid] if 0 <= cid < len(class_names) else str(cid)
    record["events"] = [e.to_dict(class_names) for e in result.events]
    return record


def encoded_record(result: Result, mask_format: MaskFormat = "rle", class_names: Sequence[str] = ()) -> str:
    """The JSON text of :func:`result_record` from the member after ``seq`` on (``"frame":...}``), so that a
    sink puts its own ``seq`` (and what else it adds) in front: ``'{"seq":%d,' % seq + text``.

    Encoded once per result, mask format and class names, whichever sink asks first: on a device the JSON
    lines and the MQTT sink publish every result alike, and its encoding was most of what each paid for it.
    Raises ValueError for a value JSON cannot hold (NaN, infinity): such a record is not written at all.
    """
    key = (mask_format, tuple(class_names))
    text = result._encoded.get(key)
    if text is not None:
        return text
    with _ENCODING:
        text = result._encoded.get(key)
        if text is None:
            record = result_record(result, 0, mask_format, class_names)
            del record["seq"]
            text = result._encoded[key] = json.dumps(record, separators=(",", ":"), allow_nan=False)[1:]
    return text
