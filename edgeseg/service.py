"""``edgeseg service install / uninstall / prepare``: run a pipeline as the systemd unit ``edgeseg@NAME``.

Install writes, under a root folder (``/`` unless ``--root``): ``/etc/edgeseg/NAME.yaml`` (the pipeline with
its relative paths made absolute), the template ``/etc/systemd/system/edgeseg@.service`` (its ``ExecStart=``
pointing at this environment's ``edgeseg``), template drop-ins for what this machine has (the ``render``
group, ``/dev/vchiq``, a Jetson), and ``edgeseg@NAME.service.d/50-edgeseg.conf`` (credentials, folders under
/home). Every file is written whole, mode 0644, so a second install gives the same bytes; uninstall removes
those files and the empty folders they leave, so the root is as it was. The unit runs as a dynamic user:
there is no account to create or remove.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeseg.atomic import replace_file
from edgeseg.errors import ConfigError, EdgesegError

if TYPE_CHECKING:
    import subprocess

    from edgeseg.config import PipelineConfig
    from edgeseg.modelcard import ModelCard

TEMPLATE = "edgeseg@.service"
TEMPLATE_BIN = "/opt/edgeseg/venv/bin/edgeseg"  # ExecStart= of the shipped template, replaced on install
UNIT_DIR = "/etc/systemd/system"
# where systemd 252 looks for a system unit and its drop-ins, first first (`systemd-analyze unit-paths` on
# Debian 12): `systemctl set-property`'s, `systemctl edit`'s (--runtime: /run), a package's; those of
# generators and portable services are left out (none writes edgeseg's)
UNIT_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    UNIT_DIR,
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
CONFIG_DIR = "/etc/edgeseg"
STATE_ROOT = "/var/lib/edgeseg"  # where the unit's StateDirectory=edgeseg/%i is ($STATE_DIRECTORY)
INSTANCE_DROPIN = "50-edgeseg.conf"
HOST_DROPIN = "50-edgeseg-host.conf"
JETSON_DROPIN = "60-edgeseg-jetson.conf"
# what edgeseg.mqtt.broker and edgeseg.sinks.web read from $CREDENTIALS_DIRECTORY
CREDENTIALS = ("mqtt-username", "mqtt-password", "mqtt-ca", "mqtt-cert", "mqtt-key", "web-token")
# groups that only some boards have (Pi 5, Jetson): systemd fails the start (216/GROUP) on an unknown one;
# each with the kernel device group of the nodes it is for, which the unit's DevicePolicy=closed would refuse
# the group or not: /dev/dri/renderD* are "drm" in /proc/devices (the kernel's drivers/gpu/drm/drm_drv.c:
# register_chrdev(DRM_MAJOR, "drm", ...)). char-drm takes in /dev/dri/card* too, whose file modes then decide
OPTIONAL_GROUPS = {"render": "char-drm"}
# device nodes without a kernel device group of their own; systemd 252 warns at every start for a missing path
OPTIONAL_NODES = ("/dev/vchiq",)
# what ProtectHome= hides
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))
# what the unit's private /tmp and /var/tmp hide (PrivateTmp=, which DynamicUser=yes implies: a drop-in's
# PrivateTmp=no does not lift it); no bind is written for them, since Debian's tmpfiles.d/tmp.conf empties
# /tmp at every boot ("D /tmp"): a model kept there is gone after the next power cut anyway
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# the longest file name install writes is replace_file's temp file for the config, ".NAME.yaml.XXXXXXXX.tmp":
# 19 characters more than NAME within a file name's 255 (the unit name edgeseg@NAME.service, 16 more, is
# within systemd's 255 then too)
NAME_MAX = 255 - len("..yaml.XXXXXXXX.tmp")


def unit_file(name: str) -> str:
    """A file shipped in ``edgeseg/systemd/`` (``systemd/`` in the repository links to it)."""
    return files("edgeseg").joinpath("systemd", name).read_text(encoding="utf-8")


def check_name(name: str) -> str:
    """Instance names are file names and ``%i``: letters, digits, ``_ . -`` (no systemd escaping needed)."""
    if name.startswith("edgeseg@"):  # the unit's name, as systemctl and journalctl take it
        instance = name.removeprefix("edgeseg@").removesuffix(".service")
        raise ConfigError(f"service name {name!r}: give the instance's name alone, {instance!r}")
    if not name or not set(name) <= NAME_CHARS or name.startswith((".", "-")):
        raise ConfigError(f"service name {name!r}: use letters, digits, '_', '.' or '-' (e.g. front-door)")
    if len(name) > NAME_MAX:
        raise ConfigError(f"service name {name[:20]}...: {len(name)} characters, at most {NAME_MAX}")
    return name


@dataclass(frozen=True)
class Layout:
    """Where an install puts things under ``root``; ``target`` paths are as the installed system sees them."""

    root: Path

    def at(self, target: str | Path) -> Path:
        return self.root / str(target).lstrip("/")

    def config(self, name: str) -> str:
        return f"{CONFIG_DIR}/{name}.yaml"

    def instance_dropin(self, name: str) -> str:
        return f"{UNIT_DIR}/edgeseg@{name}.service.d/{INSTANCE_DROPIN}"

    def credentials(self, name: str) -> str:
        return f"{CONFIG_DIR}/credentials/{name}"

    def template_files(self) -> tuple[str, ...]:
        d = f"{UNIT_DIR}/edgeseg@.service.d"
        return (f"{UNIT_DIR}/{TEMPLATE}", f"{d}/{HOST_DROPIN}", f"{d}/{JETSON_DROPIN}")

    def instances(self) -> list[str]:
        """Installed instances: those with our drop-in."""
        found = self.at(UNIT_DIR).glob(f"edgeseg@?*.service.d/{INSTANCE_DROPIN}")
        return sorted(p.parent.name[len("edgeseg@") : -len(".service.d")] for p in found)

    def groups(self) -> dict[str, int]:
        """The root's ``/etc/group``, name -> gid (empty when it has none)."""
        out: dict[str, int] = {}
        path = self.at("/etc/group")
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                parts = line.split(":")
                if len(parts) >= 3 and parts[2].isdigit():
                    out[parts[0]] = int(parts[2])
        return out


# --- the pipeline copy -------------------------------------------------------------------------------------


def _absolute(value: str, base: Path) -> str | None:
    """``value`` as the loader would resolve it from the pipeline's folder; ``None`` when already absolute."""
    if value.startswith("~"):
        return str(Path(value).expanduser())
    return None if Path(value).is_absolute() else os.path.normpath(base / value)


# an editor's pointer to the schema (the bundled files': "# yaml-language-server: $schema=schema.json")
_MODELINE = re.compile(r"^(#\s*yaml-language-server:\s*\$schema=)(\S+)[ \t]*$", re.MULTILINE)


def _schema_modeline(text: str, base: Path) -> str:
    """``text`` with a relative schema path in its modeline made absolute: a copy elsewhere kept
    ``$schema=schema.json``, and the editor found no schema beside it (a URL is left as it is)."""

    def absolute(match: re.Match[str]) -> str:
        fixed = None if "://" in match[2] else _absolute(match[2], base)
        return match[0] if fixed is None else f"{match[1]}{fixed}"

    return _MODELINE.sub(absolute, text)


def installed_pipeline(pipeline: Path) -> str:
    """The text of ``/etc/edgeseg/NAME.yaml``: the pipeline with the paths that are relative to its folder
    (``model.path``, ``model.engine_cache_dir``, ``source.imx500_network``, ``pipeline.state_dir``, a file
    ``source.uri``, a ``picamera2:`` URI's network) made absolute, comments and layout kept; it loads to the
    same configuration from any folder."""
    from edgeseg.config import load_config
    from edgeseg.yamledit import write_back
    from edgeseg.yamlfile import read_yaml

    original = load_config(pipeline, env={})
    raw = read_yaml(pipeline, "pipeline file", ConfigError) or {}
    base = pipeline.resolve().parent
    changes: dict[str, str] = {}
    keys = [
        ("model", "path"),
        ("model", "engine_cache_dir"),
        ("source", "imx500_network"),
        ("pipeline", "state_dir"),
    ]
    for section, key in keys:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        fixed = _absolute(value, base) if isinstance(value, str) else None
        if fixed is not None:
            changes[f"{section}.{key}"] = fixed
    source = raw.get("source") if isinstance(raw.get("source"), dict) else {}
    uri = source.get("uri") if isinstance(source, dict) else None
    if isinstance(uri, str) and uri != original.source.uri:
        # the paths in it resolved from the pipeline's folder by the loader: a file's (plain or file:), a
        # picamera2: URI's network
        changes["source.uri"] = original.source.uri
    text = _schema_modeline(pipeline.read_text(encoding="utf-8"), base)
    if not changes:
        return text
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / pipeline.name
        copy.write_text(text, encoding="utf-8")
        write_back(copy, changes)
        moved = load_config(copy, env={})
        text = copy.read_text(encoding="utf-8")
    if (moved.model.path, moved.source.uri) != (original.model.path, original.source.uri):
        raise ConfigError(f"{pipeline}: could not make its paths absolute for a copy; write them so")
    return text


# --- unit and drop-ins -------------------------------------------------------------------------------------


def default_bin() -> Path:
    """The ``edgeseg`` console script of the environment this runs from."""
    here = Path(sys.executable).parent / "edgeseg"
    found = here if here.exists() else shutil.which("edgeseg")
    if found is None:
        raise ConfigError("cannot find the 'edgeseg' command of this environment: pass --bin PATH")
    return Path(found).absolute()


def with_bin(unit: str, bin_path: Path) -> str:
    """A shipped unit file with its command pointing at ``bin_path``, its ``%`` doubled: systemd would read
    one as a specifier (``/opt/50%n/edgeseg``: the unit's name in its place)."""
    return unit_file(unit).replace(TEMPLATE_BIN, str(bin_path).replace("%", "%%"))


def template_unit(bin_path: Path) -> str:
    return with_bin(TEMPLATE, bin_path)


def host_dropin(layout: Layout) -> str | None:
    """What only some machines have: the ``render`` group, ``/dev/vchiq``; ``None`` when nothing."""
    groups = [g for g in OPTIONAL_GROUPS if g in layout.groups()]
    nodes = [n for n in OPTIONAL_NODES if layout.at(n).exists()]
    if not groups and not nodes:
        return None
    lines = ["# written by `edgeseg service install` for what this machine has", "[Service]"]
    if groups:
        lines.append(f"SupplementaryGroups={' '.join(groups)}")
    lines += [f"DeviceAllow={OPTIONAL_GROUPS[g]} rw" for g in groups]
    lines += [f"DeviceAllow={n} rw" for n in nodes]
    return "\n".join(lines) + "\n"


def in_private_tmp(layout: Layout, path: Path) -> bool:
    """Whether ``path`` (as this machine sees it, links followed) lies in the root's /tmp or /var/tmp."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(layout.at(p).resolve()) for p in PRIVATE_TMP)


def in_home(path: Path) -> bool:
    return any(path.is_relative_to(h) for h in HOMES)


def home_binds(paths: Iterable[Path], homes: Iterable[Path] = HOMES) -> list[Path]:
    """The folders of ``paths`` that lie under a home folder, outermost only, sorted."""
    homes = tuple(homes)
    under = sorted({p for p in paths if any(p.is_relative_to(h) for h in homes)})
    return [p for p in under if not any(q in p.parents for q in under)]


def mqtt_files(config: PipelineConfig) -> dict[str, Path]:
    """The files ``sinks.mqtt`` names (``username_file``, ... ``key_file``), by the credential that takes
    their place (``mqtt-username``, ... ``mqtt-key``); relative ones as the service reads them, from ``/``
    (its working directory)."""
    return {c: Path("/") / p for c, p in mqtt_named(config).items()}


def mqtt_named(config: PipelineConfig) -> dict[str, Path]:
    """The files ``sinks.mqtt`` names, by credential, as written (a relative one from the folder a run
    starts in)."""
    from edgeseg.sinks.mqtt import MqttSinkConfig

    mqtt = config.sinks.section(MqttSinkConfig)
    if mqtt.url is None:
        return {}
    keys = ("username", "password", "ca", "cert", "key")
    named = {f"mqtt-{k}": getattr(mqtt, f"{k}_file") for k in keys}
    return {c: p for c, p in named.items() if p is not None}


def read_files(config: PipelineConfig) -> dict[str, Path]:
    """The files the pipeline has the service read, by the key that names them: the model, the IMX500
    network, and in ``source.uri`` a video (a file: URI's, file:///home/pi/clip.mp4, as a plain path's) or
    a picamera2: URI's network."""
    from edgeseg.sources import parse_uri

    files = {"model.path": config.model.path, "source.imx500_network": config.source.imx500_network}
    card = _card(Path(config.model.path))
    if card is not None and os.path.isfile(card.source):  # (not a card of ONNX metadata)
        files[CARD] = Path(card.source)
    if card is not None and card.file is not None:
        files[CARD_FILE] = card.file
    source = parse_uri(config.source.uri)
    if source.scheme == "file" and Path(source.target).is_absolute():
        files["source.uri"] = source.target
    if source.options.get("network"):
        files["source.uri"] = source.options["network"]
    return {k: Path(v) for k, v in files.items() if v}


# read_files()'s keys of the model's card (beside the model, or model.path itself) and of the model file a
# card given as model.path names (its ``file:``)
CARD = "model.path's card"
CARD_FILE = "model.path's card file"


def _card(model: Path) -> ModelCard | None:
    """The card the service reads for ``model.path``, which may name a model file in another folder
    (``file: /home/pi/weights/x.onnx``); ``None`` where none loads (the model check says why)."""
    from edgeseg.modelcard import find_card

    try:
        return find_card(model)
    except EdgesegError:
        return None


def needed_folders(bin_path: Path, config: Any) -> list[Path]:
    """The folders the service reads: its environment (and this package's source for an editable install,
    when ``bin_path`` is this environment's), those of :func:`read_files` and of ``sinks.mqtt``'s files,
    each also where its links lead (a model in /opt/models, a link to /home/pi/models, is read there)."""
    out = [bin_path.parent.parent, bin_path.resolve().parent.parent]
    if bin_path.parent == Path(sys.executable).parent:
        out += [Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parent.parent]
    files = [*read_files(config).values(), *mqtt_files(config).values()]
    return out + [f for p in files for f in (p.parent, p.resolve().parent)]


def unit_path(path: Path | str) -> str:
    """``path`` as one word of a systemd path list: quoted, since a bare space or ':' splits it (and a bind
    of the first part fails the start), with ``%`` doubled, which systemd would expand as a specifier."""
    escaped = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def instance_dropin(layout: Layout, name: str, binds: list[Path]) -> str:
    """Credentials that exist (a listed file that is missing fails the start), and folders under /home."""
    lines = [
        f"# written by `edgeseg service install {name}`; run it again after adding a credential file",
        "[Service]",
    ]
    creds = layout.credentials(name)
    lines += [f"LoadCredential={c}:{creds}/{c}" for c in CREDENTIALS if layout.at(f"{creds}/{c}").is_file()]
    if binds:
        lines.append("# under /home, which ProtectHome=yes would hide: show exactly these folders")
        lines.append("ProtectHome=tmpfs")
        lines.append(f"BindReadOnlyPaths={' '.join(unit_path(b) for b in binds)}")
    return "\n".join(lines) + "\n"


def state_directory(name: str) -> Path:
    """The instance's ``$STATE_DIRECTORY`` (systemd makes it, owned by the dynamic user of each start)."""
    return Path(STATE_ROOT) / name


def written_paths(config: PipelineConfig) -> dict[str, Path]:
    """What the pipeline has the service write, by key, as the service sees it: a relative path from its
    working directory, ``/``; normalized (a '..' must not climb out of the state directory unseen)."""
    from edgeseg.sinks.jsonl import JsonlSinkConfig
    from edgeseg.sinks.video import VideoSinkConfig

    paths = {
        "pipeline.state_dir": config.pipeline.state_dir,
        "model.engine_cache_dir": config.model.engine_cache_dir,
        "sinks.jsonl.path": config.sinks.section(JsonlSinkConfig).path,
        "sinks.video.path": config.sinks.section(VideoSinkConfig).path,
    }
    return {k: Path(os.path.normpath(Path("/") / p)) for k, p in paths.items() if p is not None}


def unwritable_paths(config: PipelineConfig, name: str) -> list[tuple[str, Path]]:
    """The paths the pipeline has the service write (key, path) that it cannot write: all outside its state
    directory. ProtectSystem=strict makes the rest read-only, and a mount that lifts that (BindPaths=,
    ReadWritePaths=) is not enough: the dynamic user's UID, new to the machine, writes only where "other"
    (or a device group) may, where local users could replace the engine the service loads, and files it
    wrote there (the spool: 0600 under UMask=0077) are not the next UID's to read. The state directory is
    the one systemd makes and gives to whichever UID the start gets."""
    state = state_directory(name)
    return [(k, p) for k, p in written_paths(config).items() if not p.is_relative_to(state)]


# --- install / uninstall -----------------------------------------------------------------------------------


def _write(layout: Layout, target: str, text: str, report: list[str]) -> bool:
    path = layout.at(target)
    # (bytes: a file edited by hand need not be UTF-8)
    data = text.encode("utf-8")
    if path.is_file() and path.read_bytes() == data and (path.stat().st_mode & 0o777) == 0o644:
        return False
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    replace_file(path, data, 0o644)
    report.append(f"wrote {target}")
    return True


def _put(layout: Layout, target: str, text: str | None, report: list[str]) -> bool:
    """Write ``target``, or remove it when ``text`` is None: a drop-in an earlier install wrote for what this
    one does not ask for (``--no-jetson`` after ``--jetson``) must not stay in force."""
    if text is not None:
        return _write(layout, target, text, report)
    path = layout.at(target)
    if not path.is_file():
        return False
    path.unlink()
    report.append(f"removed {target}")
    _prune(layout, path.parent)
    return True


def _systemd_runs(layout: Layout) -> bool:
    return layout.root == Path("/") and Path("/run/systemd/system").is_dir()


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    import subprocess

    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def _active(unit: str) -> bool:
    return _systemctl("is-active", "--quiet", unit).returncode == 0


def _must(*args: str) -> None:
    done = _systemctl(*args)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise EdgesegError(f"systemctl {' '.join(args)}: {why}")


@dataclass(frozen=True)
class InstallOptions:
    name: str
    pipeline: Path
    root: Path = Path("/")
    bin_path: Path | None = None
    jetson: bool | None = None  # None: when /etc/nv_tegra_release exists under the root
    start: bool = True


def install(opts: InstallOptions) -> list[str]:
    """Install (or bring up to date) ``edgeseg@NAME``; returns the report lines. Raises :class:`ConfigError`
    when the pipeline is invalid or ``/etc/edgeseg/NAME.yaml`` holds something else (edited by hand?)."""
    from edgeseg.config import load_config

    name, layout = check_name(opts.name), Layout(opts.root)
    if mask := masking(layout.root, name):
        # `systemctl mask` says "never start this": writing the template over its link to /dev/null would
        # lift that unannounced (the template's mask, for every instance); the operator unmasks, not install
        where = Path("/") / mask.relative_to(layout.root)
        raise ConfigError(
            f"edgeseg@{name}.service is masked ({where} is empty or a link to /dev/null): install leaves it "
            f"so; to install and run it, systemctl unmask {mask.name} first"
        )
    bin_path = opts.bin_path or default_bin()
    # systemd splits a command line at a space and reads a quote or a backslash as quoting or an escape (an
    # unbalanced quote: the ExecStart= line ignored, the unit refused); a '%' is doubled (with_bin)
    if not bin_path.is_absolute() or any(c.isspace() or c in "'\"\\" for c in str(bin_path)):
        raise ConfigError(f"--bin {bin_path}: give an absolute path without spaces, quotes or backslashes")
    text = installed_pipeline(opts.pipeline)
    config = load_config(opts.pipeline, env={})
    if unwritable := unwritable_paths(config, name):
        (key, path), state = unwritable[0], state_directory(name)
        without = {"pipeline.state_dir": f"uses {state}", "model.engine_cache_dir": f"uses {state}/engines"}
        raise ConfigError(
            f"{opts.pipeline}: {key} is {path}, which the service cannot write (it writes only its state "
            f"directory {state}): point it there, or remove the key (the service then "
            f"{without.get(key, 'writes none')})"
        )
    creds = layout.credentials(name)
    # (a credential takes the file's place: its path is not read then)
    relative = [
        (c, p)
        for c, p in mqtt_named(config).items()
        if not p.is_absolute() and not layout.at(f"{creds}/{c}").is_file()
    ]
    if relative:
        credential, path = relative[0]
        key = f"sinks.mqtt.{credential.removeprefix('mqtt-')}_file"
        raise ConfigError(
            f"{opts.pipeline}: {key} is {path}, read from the folder a run starts in, and the service's "
            f"is / (it would read /{path}): give the whole path, or the file as the credential "
            f"{creds}/{credential}"
        )
    if hidden := [p for p in needed_folders(bin_path, config) if in_private_tmp(layout, p)]:
        raise ConfigError(
            f"{opts.pipeline}: the service would not see {hidden[0]}: its /tmp and /var/tmp are its own "
            "(PrivateTmp=, implied by DynamicUser=), and /tmp is emptied at boot; move the model, video, "
            "files or environment there elsewhere (e.g. /opt/edgeseg or /srv/edgeseg)"
        )
    target = layout.config(name)
    existing = layout.at(target)
    if existing.exists() and existing.read_bytes() != text.encode("utf-8"):  # (edited: maybe not UTF-8)
        raise ConfigError(
            f"{target} exists and differs from what {opts.pipeline} gives (edited by hand?): keep it and "
            f"skip install, or remove it to install {opts.pipeline}"
        )
    report: list[str] = []
    own = _write(layout, target, text, report)
    # the template and its drop-ins, which every instance shares
    shared = _write(layout, layout.template_files()[0], template_unit(bin_path), report)
    shared |= _put(layout, layout.template_files()[1], host_dropin(layout), report)
    jetson = layout.at("/etc/nv_tegra_release").exists() if opts.jetson is None else opts.jetson
    jet = with_bin("jetson.conf", bin_path) if jetson else None
    shared |= _put(layout, layout.template_files()[2], jet, report)
    binds = home_binds(needed_folders(bin_path, config))
    own |= _write(layout, layout.instance_dropin(name), instance_dropin(layout, name, binds), report)
    changed = own or shared
    if binds:
        shown = " ".join(str(p) for p in binds)
        report.append(f"under /home: the service sees only {shown} (ProtectHome=tmpfs + bind mounts)")
    if not changed:
        report.append(f"edgeseg@{name}: already installed, nothing changed")
    unit = f"edgeseg@{name}.service"
    runs = _systemd_runs(layout)
    # another instance that runs goes on with the template it started with, and would take the new one at
    # its next restart (a crash, a reboot) unannounced: restarted with this one, so that every instance
    # runs what is installed
    others = [f"edgeseg@{i}.service" for i in layout.instances() if i != name] if shared and runs else []
    others = [u for u in others if _active(u)]
    if opts.start and runs:
        _must("daemon-reload")
        if changed and _active(unit):
            _must("restart", unit)
            report.append(f"restarted {unit}")
        else:
            # a unit that hit StartLimitBurst refuses every start until StartLimitIntervalSec= has passed,
            # an operator's too, unless reset-failed flushes its counter (systemd.unit(5)): installing again
            # is how one says it is fixed. Fails harmlessly for a unit not loaded yet.
            _systemctl("reset-failed", unit)
            _must("enable", "--now", unit)
            report.append(f"enabled and started {unit}")
        for other in others:
            _must("restart", other)
            report.append(f"restarted {other}: the template it shares changed")
        report.append(f"follow it: journalctl -u {unit} -f")
    elif runs and _active(unit):
        # enable --now starts nothing that runs: the instance would go on with the files it started with
        restart = [unit] if changed else []
        if restart or others:
            units = " ".join([*restart, *others])
            report.append(f"to apply it: systemctl daemon-reload && systemctl restart {units}")
        elif _systemctl("is-enabled", "--quiet", unit).returncode == 0:
            report.append(f"{unit} is running with these files: nothing to apply")
        else:
            report.append(f"{unit} is running with these files; to start it at boot: systemctl enable {unit}")
    else:
        # a failed unit (its start limit hit) refuses enable --now until reset-failed, as above; on a unit
        # that is not failed reset-failed may fail (not loaded yet), ending the && chain: only when needed
        failed = runs and _systemctl("is-failed", "--quiet", unit).returncode == 0
        reset = f"systemctl reset-failed {unit} && " if failed else ""
        report.append(f"to start it: systemctl daemon-reload && {reset}systemctl enable --now {unit}")
        if others:
            report.append(
                f"to apply the changed template to the others: systemctl restart {' '.join(others)}"
            )
    return report


def uninstall(name: str, root: Path = Path("/")) -> list[str]:
    """Remove what :func:`install` wrote for ``name`` (the template too when no instance is left), and the
    folders that are left empty. The state directory (spool, engines, tuning) is kept."""
    name, layout = check_name(name), Layout(root)
    unit = f"edgeseg@{name}.service"
    if name not in layout.instances():
        return [f"{unit} is not installed: nothing to remove"]
    report: list[str] = []
    if _systemd_runs(layout):
        _systemctl("disable", "--now", unit)  # fails harmlessly when it was never enabled
        # a failed unit stays failed through the stop, and loaded without its file (systemd.unit(5),
        # CollectMode=): `systemctl --failed` would list it, and the system read "degraded", for good
        _systemctl("reset-failed", unit)
        report.append(f"stopped and disabled {unit}")
    targets = [layout.config(name), layout.instance_dropin(name)]
    if layout.instances() == [name]:
        targets += layout.template_files()
    for target in targets:
        path = layout.at(target)
        if path.is_file():
            path.unlink()
            report.append(f"removed {target}")
            _prune(layout, path.parent)
    if _systemd_runs(layout):
        _must("daemon-reload")
    report.append(f"kept {state_directory(name)} (MQTT spool, engines, tuning): delete it to forget them")
    return report


def _prune(layout: Layout, folder: Path) -> None:
    """Remove ``folder`` and its parents up to the root while they are empty."""
    root = layout.root.resolve()
    folder = folder.resolve()
    while folder != root and root in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


# --- prepare -----------------------------------------------------------------------------------------------


def prepare(config: PipelineConfig) -> None:
    """Load the model once, as ``run`` would: a TensorRT engine is built and cached in the state directory
    (progress in the log), so the service's start does not wait for it. Under systemd (an ``ExecStartPre=``
    step) it asks for more start-up time while it works, as ``run`` does."""
    from edgeseg.pipeline import ModelStages
    from edgeseg.sdnotify import Notifier
    from edgeseg.watchdog import StartupExtender

    starting = StartupExtender(Notifier.from_env())
    starting.start(config.pipeline.start_timeout_s, f"preparing the model {config.model.path}")
    try:
        ModelStages.from_config(config).close()
    finally:
        starting.stop()


# --- command line ------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """The ``service`` subcommand and its ``install``, ``uninstall`` and ``prepare`` actions."""
    p = sub.add_parser(
        "service",
        help="install a pipeline as the systemd service edgeseg@NAME (and remove it)",
        description="Run a pipeline unattended as the systemd unit edgeseg@NAME (see systemd/README.md).",
    )
    actions = p.add_subparsers(dest="service_action", metavar="ACTION", required=True)
    ins = actions.add_parser(
        "install",
        help="install or update edgeseg@NAME from a pipeline file (idempotent)",
        description="Copy PIPELINE to /etc/edgeseg/NAME.yaml, write the unit and its drop-ins, then "
        "daemon-reload and enable --now edgeseg@NAME when systemd runs (not with --root or --no-start).",
    )
    ins.add_argument("name", metavar="NAME", help="instance name, e.g. front-door")
    ins.add_argument("--pipeline", required=True, metavar="FILE", help="pipeline YAML (or a bundled name)")
    ins.add_argument("--bin", metavar="PATH", help="the edgeseg command to run (default: this environment's)")
    ins.add_argument(
        "--jetson",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the Jetson drop-in: TensorRT engine built in ExecStartPre, CUDA devices "
        "(default: when /etc/nv_tegra_release exists)",
    )
    ins.add_argument("--no-start", action="store_true", help="write the files only; print the commands")
    uni = actions.add_parser(
        "uninstall",
        help="stop edgeseg@NAME and remove what install wrote",
        description="Stop and disable edgeseg@NAME, then remove its config copy and drop-ins (the template "
        "unit too when no instance is left). The state directory is kept.",
    )
    uni.add_argument("name", metavar="NAME", help="instance name")
    for a in (ins, uni):
        a.add_argument("--root", default="/", metavar="DIR", help="install under DIR (packaging, tests)")
    pre = actions.add_parser(
        "prepare",
        help="load a pipeline's model once (builds and caches a TensorRT engine), then exit",
        description="Load the pipeline's model as 'run' would, so that a TensorRT engine is built and cached "
        "before the service starts (the Jetson drop-in runs this as ExecStartPre=).",
    )
    pre.add_argument("pipeline", metavar="PIPELINE", help="pipeline YAML (or a bundled name)")


def command(args: argparse.Namespace) -> int:
    from edgeseg.cliconfig import pipeline_path

    if args.service_action == "prepare":
        from edgeseg.config import load_config

        prepare(load_config(pipeline_path(args.pipeline)))
        return 0
    try:
        if args.service_action == "install":
            pipeline = pipeline_path(args.pipeline)
            assert pipeline is not None
            opts = InstallOptions(
                args.name,
                pipeline,
                Path(args.root),
                Path(args.bin) if args.bin else None,
                args.jetson,
                start=not args.no_start,
            )
            lines = install(opts)
        else:
            lines = uninstall(args.name, Path(args.root))
    except OSError as exc:
        # the files under /etc, written or removed: most often a user's command without sudo (a traceback)
        where = f"{exc.filename}: " if exc.filename else ""
        root = isinstance(exc, PermissionError)
        hint = f" (run it as root: sudo edgeseg service {args.service_action} ...)" if root else ""
        raise EdgesegError(f"service {args.service_action}: {where}{exc.strerror or exc}{hint}") from None
    for line in lines:
        print(line)
    return 0


def _fragment(layout: Layout, name: str) -> Path | None:
    """The unit file systemd loads for ``edgeseg@NAME``: the instance's own, anywhere, before the
    template's (src/shared/unit-file.c, unit_file_find_fragment); a link to /dev/null counts."""
    units = [layout.at(f"{d}/{u}") for u in (f"edgeseg@{name}.service", TEMPLATE) for d in UNIT_PATH]
    return next((u for u in units if u.exists()), None)


def masked(path: Path) -> bool:
    """Whether a unit file masks the unit: a link to /dev/null or an empty file (`systemctl mask`;
    systemd's null_or_empty_path)."""
    st = path.stat()
    return st.st_size == 0 if stat.S_ISREG(st.st_mode) else st.st_rdev == os.stat("/dev/null").st_rdev


def masking(root: Path, name: str) -> Path | None:
    """The unit file that masks ``edgeseg@NAME`` (systemd refuses to start it), if one does."""
    unit = _fragment(Layout(root), name)
    return unit if unit is not None and masked(unit) else None


def installed(root: Path, name: str) -> Mapping[str, Path]:
    """The unit files of ``name`` that exist, in systemd's order (template, then its drop-ins and the
    instance's, by file name): what :mod:`edgeseg.doctor` reads. Each is looked for in every folder of
    :data:`UNIT_PATH`, the first found of a name winning, as systemd does (systemd.unit(5): a file in /etc
    hides one in /run, which hides one in /usr/lib; an instance's drop-in hides the template's of the same
    name in its folder, as ``systemctl edit`` writes override.conf for both)."""
    layout = Layout(root)
    unit = _fragment(layout, name)
    ordered = [unit] if unit is not None and not masked(unit) else []
    dropins: dict[str, Path] = {}
    # by folder, the instance's, then the template's; then service.d/, every service's (src/shared/dropin.c,
    # unit_file_find_dropin_paths)
    found = [f"{d}/{u}.d" for d in UNIT_PATH for u in (f"edgeseg@{name}.service", TEMPLATE)]
    for folder in [*found, *(f"{d}/service.d" for d in UNIT_PATH)]:
        for path in sorted(layout.at(folder).glob("*.conf")):
            dropins.setdefault(path.name, path)
    ordered += [dropins[n] for n in sorted(dropins)]
    return {str(p.relative_to(layout.root)): p for p in ordered}
