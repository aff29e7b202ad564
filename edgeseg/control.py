"""Live control: the one way to change a running pipeline, and to keep the change.

:meth:`Control.update` takes dotted key paths of the pipeline config and validates them by rebuilding the
whole config with the same loader as the YAML (same messages, same key paths, cross-field rules included),
then swaps in a new immutable :class:`~edgeseg.live.Snapshot` with the next ``config_version``. Stages read
the current snapshot once per frame (a reference read, no lock), so an update never waits for a frame and a
frame never sees half an update.

Which keys change live is declared on the config fields (``live=True``): the post-processing thresholds and
``source.roi`` (unless the sensor crops, on the IMX500). Everything else (model, source URI, sinks) is
refused with "needs a restart". A live key that the loaded model does not use (``iou_threshold`` of a
semantic model) is refused too, rather than accepted and ignored. Values reported are the ones in effect:
a null ("the model card's") key reports the card's value.

Persistence: :meth:`Control.save` writes the live changes (what differs from the files) to a tuning file in
the state directory, which the loader applies last at the next start (:func:`load_tuning`); or, for an
interactive user who asks, into the pipeline YAML itself, keeping its comments (:mod:`edgeseg.yamledit`).
:meth:`Control.reload` (SIGHUP) re-reads the files and applies what changed there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.atomic import replace_file
from edgeseg.config import Override, PipelineConfig, apply_changes, field_meta, flatten, to_raw
from edgeseg.errors import ConfigError
from edgeseg.geometry import FULL_ROI
from edgeseg.heads import DecodeOptions
from edgeseg.live import Outcome, Snapshot, Tunable, TunableKind
from edgeseg.modelcard import ModelCard
from edgeseg.stats import counted
from edgeseg.yamlfile import one_line, read_yaml

log = logging.getLogger(__name__)

TUNING_HEADER = (
    "# Live tuning of pipeline {name!r}, saved by edgeseg {when}. Applied over the pipeline file at every\n"
    "# start (after --set and EDGESEG__ variables). Delete this file to go back to the file's values.\n"
)
# of a pipeline name kept whole in its tuning file's name: with "tuning-", ".yaml" and the temporary name's
# 14 bytes more, under the 255 a file name may have
TUNING_NAME_BYTES = 200
REJECT_LOG_EVERY = 100  # after the first few, one log line per this many refused updates


def snapshot(config: PipelineConfig, card: ModelCard, version: int = 1) -> Snapshot:
    """The settings ``config`` gives a model of ``card``, every "null = the card's" value resolved."""
    p, y = config.postprocess, card.yolo_seg
    decode = DecodeOptions(
        score_threshold=y.score_threshold if p.score_threshold is None else p.score_threshold,
        iou_threshold=y.iou_threshold if p.iou_threshold is None else p.iou_threshold,
        max_det=y.max_det if p.max_det is None else p.max_det,
        semantic=p.semantic.over(card.semantic),
    )
    return Snapshot(version, config, config.source.roi, decode)


def _effective(snap: Snapshot, key: str) -> Any:
    """The value in effect for ``key`` (JSON-ready)."""
    d = snap.decode
    if key.startswith("postprocess.semantic.") and d.semantic is not None:
        return getattr(d.semantic, key.rpartition(".")[2])
    if key == "postprocess.score_threshold":
        return d.score_threshold
    if key == "postprocess.iou_threshold":
        return d.iou_threshold
    if key == "postprocess.max_det":
        return d.max_det
    if key == "source.roi":
        return list(snap.roi or FULL_ROI)
    assert snap.config is not None
    return flatten(to_raw(snap.config)).get(key)


@dataclass(frozen=True)
class TuningFile:
    """Saved live tuning: ``values`` (dotted key -> value) read from ``path`` (empty when there is none);
    ``left_out``: the file's entries not applied (key -> (value, the one-line error why)), which the file
    keeps (see :func:`edgeseg.cliconfig.load_pipeline`)."""

    path: Path
    values: Mapping[str, Any]
    left_out: Mapping[str, tuple[Any, str]] = field(default_factory=dict)

    def overrides(self) -> list[Override]:
        origin = f"saved tuning {self.path}"
        return [Override(f"{key}={one_line(value)}", origin) for key, value in self.values.items()]


def tuning_path(state: Path, pipeline_name: str) -> Path:
    """``tuning-NAME.yaml`` in ``state``. A name so long that this, or the temporary name it is written
    under (:func:`~edgeseg.atomic.replace_file`: 14 bytes more), would pass the 255 bytes of a file name is
    cut and given a hash of itself, so that two such names keep two files."""
    name = pipeline_name
    if len(os.fsencode(name)) > TUNING_NAME_BYTES:
        import hashlib  # (here: it loads OpenSSL, which a run that hashes nothing leaves out)

        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
        name = f"{name[:32]}-{digest}"
    return state / f"tuning-{name}.yaml"


def load_tuning(path: Path) -> TuningFile:
    """The saved tuning at ``path``; only live keys may be there (a hand-edited file is checked too): another
    one (a key an upgrade renamed) is left out, with why."""
    if not os.path.isfile(path):  # (not Path.is_file: a --state-dir name too long for a file name raised)
        return TuningFile(path, {})
    doc = read_yaml(path, "saved tuning", ConfigError) or {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: saved tuning must be a mapping of key.path: value")
    values: dict[str, Any] = {}
    left_out: dict[str, tuple[Any, str]] = {}
    for key, value in doc.items():
        meta = field_meta(str(key))
        if meta is None or not meta.get("live"):
            why = f"{path}: {key}: not a key that changes live, so it cannot be saved tuning"
            left_out[str(key)] = (value, why)
        else:
            values[str(key)] = value
    return TuningFile(path, values, left_out)


@dataclass(frozen=True)
class ControlSetup:
    """What the command that runs a pipeline knows beyond its config (see :class:`Control`'s arguments)."""

    base: PipelineConfig | None = None
    file: Path | None = None
    tuning: Path | None = None
    reloader: Callable[[], PipelineConfig] | None = None
    left_out: Mapping[str, tuple[Any, str]] = field(default_factory=dict)


class Control:
    """The live settings of one pipeline.

    Args:
        config: the configuration the pipeline starts with (saved tuning applied).
        card: the loaded model's card (its task decides which keys apply, its values fill the nulls).
        base: the configuration the files and flags give, without saved tuning: what :meth:`save` compares
            against. Default: ``config``.
        file: the pipeline YAML (for messages, reload and write-back); ``None``: none was named, the bundled
            demo runs. Saving into a bundled pipeline is refused, however it was named: it would rewrite the
            checkout's or the install's copy, which an update replaces.
        tuning: where :meth:`save` writes; ``None``: saving is refused.
        reloader: loads the files again (SIGHUP); ``None``: reload is refused.
        left_out: the saved tuning's entries not applied at start (:class:`TuningFile`); a save keeps them
            in the tuning file, unless it saves a value of that key.
        sensor_crops: the ROI is applied on the sensor at start (IMX500): ``source.roi`` needs a restart.
    """

    def __init__(
        self,
        config: PipelineConfig,
        card: ModelCard,
        *,
        base: PipelineConfig | None = None,
        file: Path | None = None,
        tuning: Path | None = None,
        reloader: Callable[[], PipelineConfig] | None = None,
        sensor_crops: bool = False,
        left_out: Mapping[str, Any] | None = None,
    ) -> None:
        from edgeseg.config import DEFAULT_PIPELINE, is_bundled

        self.card = card
        self.file = file or DEFAULT_PIPELINE
        self._bundled = is_bundled(self.file)
        self.tuning = tuning
        self._left_out = dict(left_out or {})
        self._reloader = reloader
        self._sensor_crops = sensor_crops
        self._base = base or config
        # live keys a reload could not apply (the sensor crops, the model does not use them) -> their value
        # before it: the file's new one waits for a restart, so a save must not keep the running one over it
        self._pending: dict[str, Any] = {}
        self._kept = config  # what a restart would run: the files, flags and saved tuning (see reset)
        self._snap = snapshot(config, card)
        self._raw = to_raw(config)  # the current config as a document, to apply changes to
        self._lock = threading.Lock()
        self._watchers: list[Callable[[Outcome], None]] = []
        self._rejected = 0

    # reading -------------------------------------------------------------------------------------------

    def current(self) -> Snapshot:
        return self._snap  # one reference read: atomic, never blocks a frame

    def value(self, key: str) -> Any:
        return _effective(self._snap, key)

    def tunables(self) -> list[Tunable]:
        """Every key that changes live and applies to this model, with the value in effect."""
        snap = self._snap
        assert snap.config is not None
        out = []
        for key in flatten(to_raw(snap.config)):
            meta = field_meta(key)
            if meta is None or not meta.get("live") or self._inapplicable(key):
                continue
            value = _effective(snap, key)
            kind: TunableKind = (
                "roi"
                if key == "source.roi"
                else "bool"
                if isinstance(value, bool)
                else "integer"
                if isinstance(value, int)
                else "number"
            )
            lo = meta.get("ge")
            if lo is None and meta.get("gt") is not None:
                # an exclusive bound is no value a slider may offer (dragged to its end, the change was
                # refused, in Home Assistant, the window and the web page alike): the first step above it
                lo = round(meta["gt"] + (meta.get("step") or (1 if kind == "integer" else 0.01)), 6)
            out.append(Tunable(key, value, kind, meta["doc"], lo, meta.get("le"), meta.get("step")))
        return out

    def watch(self, callback: Callable[[Outcome], None]) -> None:
        self._watchers.append(callback)

    # changing ------------------------------------------------------------------------------------------

    def update(self, changes: Mapping[str, Any], origin: str = "api", *, quiet: bool = False) -> Outcome:
        """Validate each change like the YAML, then apply the valid ones together as one new version.

        ``changes`` maps dotted key paths to values (a mapping value stands for the keys below it). A
        change that is invalid, needs a restart or does not apply to the model is rejected with the reason;
        the others are applied. Never raises for bad input. ``quiet``: the caller logs the outcome.
        """
        flat = _flat_changes(changes)
        with self._lock:
            outcome = self._update_locked(flat, origin)
        if not quiet:
            self._log(outcome, origin)
        self._tell_watchers(outcome)
        return outcome

    def _update_locked(self, flat: Mapping[str, Any], origin: str) -> Outcome:
        """:meth:`update` of flat changes, the lock held (the caller logs and tells the watchers)."""
        snap = self._snap
        assert snap.config is not None
        rejected: dict[str, str] = {}
        wanted: dict[str, Any] = {}
        for key, value in flat.items():
            reason = self._not_live(key, value, origin)
            if reason is None:
                wanted[key] = value
            else:
                rejected[key] = reason
        config, accepted = self._apply(snap.config, wanted, origin, rejected)
        new = snap
        if config != snap.config:
            new = snapshot(config, self.card, snap.version + 1)
            self._snap, self._raw = new, to_raw(config)
        applied = {key: _effective(new, key) for key in accepted}
        return Outcome(applied, rejected, new.version)

    def _tell_watchers(self, outcome: Outcome) -> None:
        if outcome.applied:
            for callback in list(self._watchers):
                try:
                    callback(outcome)
                except Exception as exc:  # a front-end that fails must not undo or block the update
                    log.warning("a watcher of the live settings failed: %s", exc)

    def _build(self, config: PipelineConfig, changes: Mapping[str, Any], origin: str) -> PipelineConfig:
        return apply_changes(config, self._raw, changes, origin, self.file)

    def _apply(
        self, config: PipelineConfig, wanted: dict[str, Any], origin: str, rejected: dict[str, str]
    ) -> tuple[PipelineConfig, dict[str, Any]]:
        """The config with the valid ones of ``wanted`` (live keys) applied, and those; the others go to
        ``rejected``. All together first: one validation in the usual case of valid changes."""
        if not wanted:
            return config, {}
        try:
            return self._build(config, wanted, origin), wanted
        except ConfigError as e:
            if len(wanted) == 1:
                rejected.update(dict.fromkeys(wanted, _reason(str(e))))
                return config, {}
        valid = {}
        for key, value in wanted.items():  # which of them is wrong
            try:
                self._build(config, {key: value}, origin)
            except ConfigError as e:
                rejected[key] = _reason(str(e))
            else:
                valid[key] = value
        if not valid:
            return config, {}
        try:
            return self._build(config, valid, origin), valid
        except ConfigError as e:  # a rule across keys: each was valid alone
            rejected.update(dict.fromkeys(valid, _reason(str(e))))
            return config, {}

    def _not_live(self, key: str, value: Any, origin: str) -> str | None:
        """Why ``key`` cannot change now, or ``None``: not a key (the loader's words), not live, or not
        used by the loaded model."""
        meta = field_meta(key)
        if meta is None:
            assert self._snap.config is not None
            try:
                self._build(self._snap.config, {key: value}, origin)
            except ConfigError as e:
                return _reason(str(e))
            return "is a section: give the keys below it (e.g. section.key: value)"
        if not meta.get("live"):
            return (
                "needs a restart: it is read once at start (only the post-processing thresholds and "
                "source.roi change live)"
            )
        return self._inapplicable(key)

    def _inapplicable(self, key: str) -> str | None:
        task = self.card.task
        if key.startswith("postprocess.semantic.") and task != "semantic":
            return f"has no effect: model {self.card.name} is a {task} model, not semantic"
        semantic = key.removeprefix("postprocess.semantic.")
        kept = self.card.split_params
        if semantic != key and kept is not None and semantic not in kept:
            return (
                f"has no effect: model {self.card.name} draws where parts touch, so nothing is split by"
                " distance reliefs"
            )
        yolo_keys = ("postprocess.score_threshold", "postprocess.iou_threshold", "postprocess.max_det")
        if key in yolo_keys and task != "yolo-seg":
            return f"has no effect: model {self.card.name} is a {task} model (yolo-seg only)"
        if key == "source.roi" and self._sensor_crops:
            return "needs a restart with the imx500 backend: the sensor crops at start"
        return None

    def _log(self, outcome: Outcome, origin: str) -> None:
        if outcome.applied:
            shown = ", ".join(f"{k}={one_line(v)}" for k, v in outcome.applied.items())
            log.info("config_version %d: %s (%s)", outcome.version, shown, origin)
        if outcome.rejected:
            self._rejected += 1
            if self._rejected <= 3 or self._rejected % REJECT_LOG_EVERY == 0:
                shown = "; ".join(f"{k}: {why}" for k, why in outcome.rejected.items())
                log.warning("live change refused (%s, %d so far): %s", origin, self._rejected, shown)

    # keeping -------------------------------------------------------------------------------------------

    def changes(self) -> dict[str, Any]:
        """The live keys whose value differs from what the files and flags say (what :meth:`save` keeps)."""
        assert self._snap.config is not None
        now, base = flatten(to_raw(self._snap.config)), {**flatten(to_raw(self._base)), **self._pending}
        return {
            key: value
            for key, value in now.items()
            if value != base.get(key) and (meta := field_meta(key)) is not None and meta.get("live")
        }

    def save(self, into_yaml: bool = False) -> str:
        """Write the live changes to the tuning file (``into_yaml``: into the pipeline YAML, comments kept,
        and the tuning file is removed). Raises :class:`ConfigError` when it cannot write."""
        with self._lock:
            changes = self.changes()
            config = self._snap.config
            assert config is not None
            if into_yaml:
                if self._bundled:
                    copy = f"edgeseg pipelines --copy {self.file.stem} FILE"
                    raise ConfigError(
                        f"pipelines/{self.file.name} is bundled with edgeseg (an update replaces it): copy "
                        f"it ('{copy}'), run that and save into it, or save into the state directory"
                    )
                from edgeseg.yamledit import write_back

                write_back(self.file, changes)
                self._base, self._pending = config, {}
                if self.tuning is not None:
                    # (the entries left out at start stay, as they were: written nowhere else)
                    _write_tuning(self.tuning, config.name, self._left_out)
                where = str(self.file)
            else:
                if self.tuning is None:
                    raise ConfigError("this pipeline has no state directory to save its tuning in")
                # an entry left out at start is kept unless a value of its key is saved over it: a save
                # must not drop what a user saved before an upgrade without a word
                self._left_out = {k: v for k, v in self._left_out.items() if k not in changes}
                _write_tuning(self.tuning, config.name, {**self._left_out, **changes})
                where = str(self.tuning)
            self._kept = config
        # values as the tuning file and --set write them (null, true), not as Python does (None, True)
        shown = ", ".join(f"{k}={one_line(v)}" for k, v in changes.items()) or "nothing differs from the file"
        line = f"saved {counted(len(changes), 'tuned value')} to {where}: {shown}"
        if self._left_out and self.tuning is not None:
            line += f"; kept in {self.tuning} as they were (left out at start): {', '.join(self._left_out)}"
        log.info("%s", line)
        return line

    def reset(self) -> Outcome:
        """Undo the live changes not saved: back to what a restart would run (the files, the flags and the
        saved tuning as of the start, the last save or the values the last reload applied)."""
        # (read and undone in one step: a reload between them would be undone by values it replaced)
        with self._lock:
            assert self._snap.config is not None
            now, kept = flatten(to_raw(self._snap.config)), flatten(to_raw(self._kept))
            undo = {
                key: kept.get(key)
                for key, value in now.items()
                if value != kept.get(key) and (meta := field_meta(key)) is not None and meta.get("live")
            }
            outcome = self._update_locked(undo, "reset")
        self._log(outcome, "reset")
        self._tell_watchers(outcome)
        return outcome

    def reload(self) -> Outcome:
        """Read the files again (SIGHUP) and apply the keys that changed there since start (or the last
        reload). Keys that changed but need a restart are rejected with "needs a restart" and stay as they
        are; live changes made meanwhile to other keys are kept. The caller logs the outcome.

        Raises:
            ConfigError: the files do not load (the running settings are unchanged).
        """
        if self._reloader is None:
            raise ConfigError("this pipeline cannot reload its files")
        new = self._reloader()
        # the new files, the settings they change and what a save or reset compares against, in one step: a
        # save between them kept the files' old values as live changes, over the new ones at the next start
        with self._lock:
            old, now = flatten(to_raw(self._base)), flatten(to_raw(new))
            changed = {key: value for key, value in now.items() if old.get(key) != value}
            # a key gone from the files (a zone removed) changed too; a live key never goes (it has a default)
            changed.update(dict.fromkeys(sorted(old.keys() - now.keys())))
            self._base = new
            outcome = self._update_locked(changed, "reload")
            for key in outcome.rejected:  # the value before the first reload that could not apply it
                if (meta := field_meta(key)) is not None and meta.get("live"):
                    self._pending.setdefault(key, old.get(key))
            for key in outcome.applied:
                self._pending.pop(key, None)
            if outcome.applied:  # a restart now runs the file's new values: a reset goes back to them
                kept = {key: changed[key] for key in outcome.applied}
                self._kept = apply_changes(self._kept, to_raw(self._kept), kept, "reload", self.file)
        self._tell_watchers(outcome)
        return outcome


def _flat_changes(changes: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in changes.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat_changes(value, path + "."))
        else:
            out[path] = value
    return out


def _reason(message: str) -> str:
    """A loader message without its leading key path (the reply names the key)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and " " not in head else message


def _write_tuning(path: Path, name: str, values: Mapping[str, Any]) -> None:
    """Write atomically (:func:`edgeseg.atomic.replace_file`)."""
    if not values:
        _remove_tuning(path)
        return
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # one "key: value" line each, the value in flow style: a list stays on its line
    # (the key too: one left out at start is as a hand-edited file wrote it, "a: b" and all)
    body = "".join(f"{one_line(key)}: {one_line(values[key])}\n" for key in sorted(values))
    text = TUNING_HEADER.format(name=name, when=when) + body
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot save the tuning ({exc.strerror or exc})") from None


def _remove_tuning(path: Path) -> None:
    # a state directory gone read-only (an SD card remounted after an error) fails here too: one line
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot remove the saved tuning ({exc.strerror or exc})") from None


def describe_tuning(tuning: TuningFile) -> str:
    shown = ", ".join(f"{k}={one_line(v)}" for k, v in tuning.values.items()) or "nothing"
    line = f"applying saved tuning from {tuning.path}: {shown}"
    if tuning.left_out:
        line += f"; left out (the file keeps them; see the warnings): {', '.join(tuning.left_out)}"
    return line
