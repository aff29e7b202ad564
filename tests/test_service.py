"""``edgeseg service`` and ``edgeseg doctor --service``: the unit as installed into a throwaway root, checked
with the real systemd-analyze (252), the real installer and the real demo model."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from mqtt_harness import Broker

from edgeseg import doctor, service
from edgeseg.config import load_config
from edgeseg.doctor import Check, service_checks, timespan_s
from edgeseg.errors import ConfigError
from edgeseg.service import InstallOptions, home_binds, install, prepare, uninstall, unit_file
from edgeseg.sources import make_source

REPO = Path(__file__).resolve().parents[1]
TOKEN_TEXT = "3f9c2a7be1d04c55a8e6b1f27d90c4e1"  # what `openssl rand -hex 16` makes
DEMO = REPO / "pipelines" / "demo.yaml"
ANALYZE = shutil.which("systemd-analyze")
# scripts/test.sh installs it (Debian's systemd package); CI must not skip what it cannot run
needs_analyze = pytest.mark.skipif(
    ANALYZE is None and os.environ.get("CI", "").lower() != "true", reason="systemd-analyze not installed"
)


def _demo() -> str:
    """The demo pipeline with its model path absolute, to be written anywhere."""
    return DEMO.read_text().replace("../models/", f"{REPO}/models/")


def _install(root: Path, name: str = "front-door", pipeline: Path = DEMO, **kw: object) -> list[str]:
    return install(InstallOptions(name, pipeline, root, start=False, **kw))  # type: ignore[arg-type]


def _install_cli(root: Path, pipeline: Path = DEMO, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``edgeseg service install front-door --no-start`` under ``root``, run as a user runs it."""
    argv = [
        "service",
        "install",
        "front-door",
        "--pipeline",
        str(pipeline),
        "--root",
        str(root),
        "--no-start",
    ]
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,
    )


def _verifies(root: Path) -> None:
    """systemd reads the installed instance under ``root`` without a word."""
    done = _analyze(root, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
    assert (done.returncode, done.stderr) == (0, "")


def _dropin(root: Path) -> Path:
    """A drop-in of front-door's under ``root``, not written yet, to change its unit in as a user would."""
    return root / "etc/systemd/system/edgeseg@front-door.service.d/override.conf"


def _installed(root: Path, old: str = "", new: str = "") -> Path:
    """The demo, ``old`` replaced by ``new`` in it, installed under ``root`` as front-door (its group file
    made); :func:`_dropin`."""
    pipeline = root / "pipeline.yaml" if old else DEMO
    if old:
        pipeline.write_text(_demo().replace(old, new))
    _group_file(root)
    _install(root, pipeline=pipeline)
    return _dropin(root)


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root with its mode and (for files) its bytes."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, path.read_bytes() if path.is_file() else None)
    return out


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the trailing ':' keeps the default unit path (sysinit.target, ...) after the root's units and drop-ins
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{root}/etc/systemd/system:"}
    return subprocess.run(
        [ANALYZE or "systemd-analyze", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _exposure(root: Path, unit: str) -> float:
    done = _analyze(root, "security", "--offline=true", "--no-pager", unit)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def _group_file(root: Path, text: str = "root:x:0:\nvideo:x:44:\n") -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "group").write_text(text)


@needs_analyze
def test_installed_unit_passes_systemd_analyze_verify_with_empty_stderr(tmp_path: Path) -> None:
    _install(tmp_path)
    _verifies(tmp_path)


@needs_analyze
def test_jetson_drop_in_passes_systemd_analyze_verify_with_empty_stderr(tmp_path: Path) -> None:
    _install(tmp_path, jetson=True)
    dropin = tmp_path / "etc/systemd/system/edgeseg@.service.d/60-edgeseg-jetson.conf"
    assert f"ExecStartPre=-{sys.executable.rsplit('/', 1)[0]}/edgeseg service prepare" in dropin.read_text()
    _verifies(tmp_path)


@needs_analyze
def test_folders_under_home_with_spaces_colons_or_percent_reach_systemd_as_one_path_each(
    tmp_path: Path,
) -> None:
    # a folder such as '/home/pi/TensorRT engines' was written bare: systemd split it at the space (or ':')
    # and bound '/home/pi/TensorRT', which does not exist, so the service failed to start (226/NAMESPACE)
    pipeline = tmp_path / "spaced.yaml"
    clip = "/home/pi/door clips/50%:off/door.mp4"
    pipeline.write_text(_demo().replace("uri: synthetic:parts?fps=30", f"uri: '{clip}'"))
    _install(tmp_path, pipeline=pipeline)
    _verifies(tmp_path)
    dropin = (tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
    [binds] = re.findall(r"^BindReadOnlyPaths=(.*)$", dropin, re.M)
    assert binds.startswith('"/home/pi/door clips/50%%:off" ') or binds == '"/home/pi/door clips/50%%:off"'


@needs_analyze
def test_installed_unit_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    _install(tmp_path)
    assert _exposure(tmp_path, "edgeseg@front-door.service") <= 2.5


def test_installing_twice_gives_an_identical_tree(tmp_path: Path) -> None:
    _group_file(tmp_path)
    _install(tmp_path)
    first = _tree(tmp_path)
    report = _install(tmp_path)
    assert _tree(tmp_path) == first
    assert "edgeseg@front-door: already installed, nothing changed" in report


# systemctl as systemd 252 answers for a unit that failed, here by hitting its start limit (StartLimitBurst=
# failed starts within StartLimitIntervalSec=): a start is refused, exit status 1, with the job result
# "start-limit" ("start of the service was attempted too often", src/shared/bus-wait-for-jobs.c); a stop
# leaves it failed (unit.c's unit_stop: -EALREADY for a unit inactive or failed, the job done), and a failed
# unit stays loaded, its file gone or not (systemd.unit(5), CollectMode=), until `systemctl reset-failed`
# (which also flushes the start counter, systemd.unit(5), StartLimitIntervalSec=); is-active of an inactive
# unit exits 3 (0 for an active one: here while $SYSTEMCTL_ACTIVE names a file); is-failed exits 0 for a
# failed unit, 1 otherwise (systemctl(1))
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
  is-active) [ -e "${SYSTEMCTL_ACTIVE:-/nonexistent}" ] || exit 3 ;;
  is-failed) [ -e "$SYSTEMCTL_FAILED" ] ;;
  reset-failed) rm -f "$SYSTEMCTL_FAILED" ;;
  enable|start|restart)
    if [ -e "$SYSTEMCTL_FAILED" ]; then
      for unit; do :; done
      echo "Job for $unit failed because start of the service was attempted too often." >&2
      exit 1
    fi ;;
esac
"""


@pytest.fixture
def failed_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """systemd as PID 1 (not so here), with the unit failed (its start limit hit): install and uninstall
    talk to it through FAKE_SYSTEMCTL. The log of systemctl calls, and the file that stands for the failed
    state."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    log, failed = tmp_path / "systemctl.log", tmp_path / "failed"
    failed.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SYSTEMCTL_LOG", str(log))
    monkeypatch.setenv("SYSTEMCTL_FAILED", str(failed))
    monkeypatch.setattr(service, "_systemd_runs", lambda layout: True)
    return log, failed


def test_installing_again_after_the_unit_hit_its_start_limit_starts_it(
    tmp_path: Path, failed_unit: tuple[Path, Path]
) -> None:
    """A unit that failed five times in ten minutes (a camera unplugged, status 4's restarts), then fixed and
    installed again: `enable --now` was refused (start-limit-hit) and install ended in an error, until the
    operator found `systemctl reset-failed` on their own or waited out the ten minutes."""
    root, (log, _) = tmp_path / "root", failed_unit
    _group_file(root)
    report = install(InstallOptions("front-door", DEMO, root))
    assert "enabled and started edgeseg@front-door.service" in report
    calls = log.read_text().splitlines()
    assert calls.index("reset-failed edgeseg@front-door.service") < calls.index(
        "enable --now edgeseg@front-door.service"
    )


def test_the_no_start_hint_for_a_unit_that_hit_its_start_limit_starts_it(
    tmp_path: Path, failed_unit: tuple[Path, Path]
) -> None:
    """`install --no-start` printed `systemctl daemon-reload && systemctl enable --now ...`, which a unit that
    hit its start limit refuses (start-limit-hit) until `systemctl reset-failed`, which it did not mention."""
    root, (_, failed) = tmp_path / "root", failed_unit
    _group_file(root)
    report = install(InstallOptions("front-door", DEMO, root, start=False))
    [hint] = [line.removeprefix("to start it: ") for line in report if line.startswith("to start it: ")]
    done = subprocess.run(["sh", "-c", hint], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert not failed.exists()
    # a unit not failed gets no reset-failed, which fails on a unit not loaded yet (ending the && chain)
    report = install(InstallOptions("front-door", DEMO, root, start=False))
    plain = "to start it: systemctl daemon-reload && systemctl enable --now edgeseg@front-door.service"
    assert plain in report


def test_the_no_start_hint_for_a_running_unit_whose_files_changed_restarts_it(
    tmp_path: Path, failed_unit: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`install --no-start` after editing the pipeline of a running instance printed `enable --now`, which
    starts nothing that runs: the instance went on with its old pipeline, though install had said how to
    apply it (install without --no-start restarts it)."""
    root, (log, failed) = tmp_path / "root", failed_unit
    failed.unlink()
    (tmp_path / "active").touch()
    monkeypatch.setenv("SYSTEMCTL_ACTIVE", str(tmp_path / "active"))
    _group_file(root)
    report = install(InstallOptions("front-door", DEMO, root, start=False))
    [hint] = [line.split(": ", 1)[1] for line in report if line.startswith(("to start it", "to apply it"))]
    subprocess.run(["sh", "-c", hint], capture_output=True, text=True, timeout=60, check=True)
    assert "restart edgeseg@front-door.service" in log.read_text().splitlines()


def test_install_no_start_of_a_running_unchanged_unit_says_it_runs_instead_of_how_to_start_it(
    tmp_path: Path, failed_unit: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`install --no-start` run again on an instance that runs with the same files printed "to start it:
    systemctl daemon-reload && systemctl enable --now ...", as though it were not running."""
    root, (_, failed) = tmp_path / "root", failed_unit
    failed.unlink()
    _group_file(root)
    _install(root)
    (tmp_path / "active").touch()
    monkeypatch.setenv("SYSTEMCTL_ACTIVE", str(tmp_path / "active"))
    report = install(InstallOptions("front-door", DEMO, root, start=False))
    assert not [line for line in report if line.startswith(("to start it", "to apply it"))], report
    assert "edgeseg@front-door.service is running with these files: nothing to apply" in report


def test_an_install_that_changes_the_shared_template_restarts_the_other_running_instances(
    tmp_path: Path, failed_unit: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installing one instance with another --bin (a new environment) rewrote the template every instance
    shares and restarted only that one: the others went on with the old command and sandbox, and took the
    new ones at their next crash or reboot, unannounced."""
    root, (log, failed) = tmp_path / "root", failed_unit
    failed.unlink()
    _group_file(root)
    _install(root, "back-door")
    _install(root, "front-door")
    (tmp_path / "active").touch()
    monkeypatch.setenv("SYSTEMCTL_ACTIVE", str(tmp_path / "active"))
    report = install(InstallOptions("front-door", DEMO, root, bin_path=Path("/opt/edgeseg/venv/bin/edgeseg")))
    assert "restart edgeseg@back-door.service" in log.read_text().splitlines()
    assert "restarted edgeseg@back-door.service: the template it shares changed" in report
    # --no-start says so: the command it prints restarts both
    report = install(InstallOptions("front-door", DEMO, root, start=False))
    units = "edgeseg@front-door.service edgeseg@back-door.service"
    assert f"to apply it: systemctl daemon-reload && systemctl restart {units}" in report


def test_uninstalling_a_failed_instance_leaves_no_failed_unit_behind(
    tmp_path: Path, failed_unit: tuple[Path, Path]
) -> None:
    """A failed instance uninstalled stayed listed by `systemctl --failed` (not-found, failed), and
    `systemctl is-system-running` said "degraded", until a reboot or a reset-failed nobody knew to run."""
    root, (_, failed) = tmp_path / "root", failed_unit
    _install(root)
    uninstall("front-door", root)
    assert not failed.exists()


def test_installing_again_without_jetson_or_render_removes_their_drop_ins(tmp_path: Path) -> None:
    # the Jetson drop-in (ExecStartPre= prepare, MemoryDenyWriteExecute=no, /dev/nvmap) stayed in force
    # after an install with --no-jetson, as the render group's after the group was gone
    _group_file(tmp_path)
    _install(tmp_path)
    plain = _tree(tmp_path)
    _group_file(tmp_path, "root:x:0:\nvideo:x:44:\nrender:x:105:\n")
    _install(tmp_path, jetson=True)
    dropins = tmp_path / "etc/systemd/system/edgeseg@.service.d"
    assert sorted(p.name for p in dropins.iterdir()) == ["50-edgeseg-host.conf", "60-edgeseg-jetson.conf"]
    _group_file(tmp_path)
    report = _install(tmp_path, jetson=False)
    assert "removed /etc/systemd/system/edgeseg@.service.d/60-edgeseg-jetson.conf" in report
    assert _tree(tmp_path) == plain


def test_uninstall_leaves_the_root_exactly_as_before_install(tmp_path: Path) -> None:
    _group_file(tmp_path, "root:x:0:\nvideo:x:44:\nrender:x:105:\n")
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    other = tmp_path / "etc/systemd/system/mosquitto.service"
    other.parent.mkdir(parents=True)
    other.write_text("[Service]\nExecStart=/usr/sbin/mosquitto\n")
    os.chmod(other, 0o600)
    before = _tree(tmp_path)
    _install(tmp_path, jetson=True)
    assert _tree(tmp_path) != before
    uninstall("front-door", tmp_path)
    assert _tree(tmp_path) == before


def test_uninstall_of_an_empty_root_leaves_it_empty(tmp_path: Path) -> None:
    _install(tmp_path)
    uninstall("front-door", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_uninstall_keeps_the_template_while_another_instance_remains(tmp_path: Path) -> None:
    _install(tmp_path, "a")
    _install(tmp_path, "b")
    uninstall("a", tmp_path)
    units = tmp_path / "etc/systemd/system"
    assert (units / "edgeseg@.service").exists()
    assert not (units / "edgeseg@a.service.d").exists()
    assert not (tmp_path / "etc/edgeseg/a.yaml").exists()
    assert (tmp_path / "etc/edgeseg/b.yaml").exists()


def test_installed_pipeline_loads_from_etc_and_points_at_the_same_model(tmp_path: Path) -> None:
    _install(tmp_path)
    installed = load_config(tmp_path / "etc/edgeseg/front-door.yaml", env={})
    original = load_config(DEMO, env={})
    assert installed.model.path == original.model.path
    assert installed.model.path.is_absolute()
    assert installed.model.path.exists()


def test_installed_pipeline_makes_a_relative_file_uri_absolute_as_a_plain_path(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    pipeline = tmp_path / "site" / "door.yaml"
    pipeline.write_text(_demo().replace("uri: synthetic:parts?fps=30", "uri: 'file:clips/door.mp4'"))
    install(InstallOptions("door", pipeline, tmp_path / "root", start=False))
    installed = load_config(tmp_path / "root/etc/edgeseg/door.yaml", env={})
    assert installed.source.uri == str(tmp_path / "site" / "clips" / "door.mp4")


def test_installed_pipeline_makes_a_relative_state_dir_absolute(tmp_path: Path) -> None:
    """A relative ``pipeline.state_dir`` was left as written in /etc/edgeseg: the service's was under /etc."""
    (tmp_path / "site").mkdir()
    pipeline = tmp_path / "site" / "door.yaml"
    pipeline.write_text(_demo().replace("  queue_size: 2\n", "  queue_size: 2\n  state_dir: state\n"))
    text = service.installed_pipeline(pipeline)
    assert f"state_dir: {tmp_path / 'site' / 'state'}" in text
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "door.yaml").write_text(text)
    installed = load_config(tmp_path / "etc" / "door.yaml", env={})
    assert installed.pipeline.state_dir == tmp_path / "site" / "state"


def test_a_video_under_home_named_by_a_file_uri_is_shown_to_the_service(tmp_path: Path) -> None:
    # ProtectHome hid it (only a plain path's folder was bound): the service ended 'file not found'
    pipeline = tmp_path / "door.yaml"
    clip = "file:///home/pi/clips/door%20cam.mp4"
    pipeline.write_text(_demo().replace("uri: synthetic:parts?fps=30", f"uri: '{clip}'"))
    _install(tmp_path, pipeline=pipeline)
    dropin = (tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
    assert '"/home/pi/clips"' in re.findall(r"^BindReadOnlyPaths=(.*)$", dropin, re.M)[0].split(" ")


def test_the_mqtt_files_of_a_pipeline_under_home_are_shown_to_the_service(tmp_path: Path) -> None:
    """sinks.mqtt.ca_file: /home/pi/certs/ca.pem, read by hand runs, was hidden by ProtectHome= (no bind for
    it): the service ended at its start, 'cannot read', status 2, never restarted."""
    pipeline = tmp_path / "door.yaml"
    mqtt = "sinks:\n  mqtt:\n    url: mqtts://broker.lan\n    ca_file: /home/pi/certs/ca.pem\n  display:"
    pipeline.write_text(_demo().replace("sinks:\n  display:", mqtt))
    _install(tmp_path, pipeline=pipeline)
    dropin = (tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
    assert '"/home/pi/certs"' in re.findall(r"^BindReadOnlyPaths=(.*)$", dropin, re.M)[0].split(" ")


def test_installed_pipeline_makes_a_picamera2_uris_network_absolute_and_shows_it_to_the_service(
    tmp_path: Path,
) -> None:
    (tmp_path / "site").mkdir()
    pipeline = tmp_path / "site" / "door.yaml"
    pipeline.write_text(
        _demo().replace("uri: synthetic:parts?fps=30", "uri: 'picamera2:0?network=nets/a.rpk'")
    )
    install(InstallOptions("door", pipeline, tmp_path / "root", start=False))
    installed = load_config(tmp_path / "root/etc/edgeseg/door.yaml", env={})
    network = make_source(installed.source).network  # type: ignore[attr-defined]
    assert network == str(tmp_path / "site" / "nets" / "a.rpk")  # not /etc/edgeseg/nets/a.rpk
    # one under /home is bound past ProtectHome, as source.imx500_network's is
    home = "uri: 'picamera2:0?network=/home/pi/nets/a.rpk'"
    pipeline.write_text(_demo().replace("uri: synthetic:parts?fps=30", home))
    _install(tmp_path, pipeline=pipeline)
    dropin = (tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
    assert '"/home/pi/nets"' in re.findall(r"^BindReadOnlyPaths=(.*)$", dropin, re.M)[0].split(" ")


def test_template_execstart_runs_this_environments_edgeseg(tmp_path: Path) -> None:
    _install(tmp_path)
    unit = (tmp_path / "etc/systemd/system/edgeseg@.service").read_text()
    assert f"ExecStart={Path(sys.executable).parent}/edgeseg run /etc/edgeseg/%i.yaml" in unit


@needs_analyze
def test_a_bin_whose_path_has_a_percent_reaches_systemd_as_that_path(tmp_path: Path) -> None:
    """--bin /opt/edgeseg-50%n/bin/edgeseg went into ExecStart= and ExecStartPre= as written: systemd read
    '%n' as the unit's name, and the service's command (its engine build too) was a file that is not there."""
    import tempfile

    root = tmp_path / "root"
    _group_file(root)
    with tempfile.TemporaryDirectory() as opt:  # (not pytest's tmp_path: only root may enter it)
        Path(opt).chmod(0o755)
        command = Path(opt) / "edgeseg-50%n" / "bin" / "edgeseg"
        command.parent.mkdir(parents=True)
        command.symlink_to(Path(sys.executable).parent / "edgeseg")
        _install(root, bin_path=command, jetson=True)
        _verifies(root)
        found = next(c for c in service_checks("front-door", root) if c.name == "command")
        assert (found.ok, found.detail) == (True, str(command))


@needs_analyze
@pytest.mark.parametrize("folder", ["o'neil", 'say"cheese', "back\\slash", "two words"])
def test_install_refuses_a_bin_that_systemd_would_not_read_as_one_path_in_one_line(
    tmp_path: Path, folder: str
) -> None:
    """--bin /opt/o'neil/venv/bin/edgeseg went into ExecStart= as written: systemd ignored the line
    ("Unbalanced quoting") and refused the unit (no ExecStart=), after install had reported success."""
    command = tmp_path / folder / "bin" / "edgeseg"
    command.parent.mkdir(parents=True)
    command.symlink_to(Path(sys.executable).parent / "edgeseg")
    # what systemd makes of such a line: not this command
    unit = tmp_path / "analyzed/etc/systemd/system" / service.TEMPLATE
    unit.parent.mkdir(parents=True)
    unit.write_text(service.template_unit(command))
    done = _analyze(
        tmp_path / "analyzed", "verify", "--man=no", "--generators=no", "edgeseg@front-door.service"
    )
    assert done.returncode != 0, done.stderr
    root = tmp_path / "root"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "service", "install", "front-door", "--pipeline", str(DEMO),
         "--root", str(root), "--no-start", "--bin", str(command)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2,
        [f"edgeseg: error: --bin {command}: give an absolute path without spaces, quotes or backslashes"],
    )
    assert list(root.iterdir()) == []


def test_a_second_install_from_another_pipeline_does_not_overwrite_the_config(tmp_path: Path) -> None:
    _install(tmp_path)
    config = tmp_path / "etc/edgeseg/front-door.yaml"
    config.write_text(config.read_text() + "# tuned by hand\n")
    with pytest.raises(ConfigError, match="differs from what"):
        _install(tmp_path)
    assert config.read_text().endswith("# tuned by hand\n")


def test_install_over_a_config_or_drop_in_edited_into_latin_1_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    """/etc/edgeseg/NAME.yaml (or a drop-in install writes) saved by an editor in Latin-1 ("# café"): install
    again ended in a UnicodeDecodeError traceback, comparing it with what it would write."""
    _install(tmp_path)
    config = tmp_path / "etc/edgeseg/front-door.yaml"
    config.write_bytes(config.read_bytes() + "# café\n".encode("latin-1"))
    done = _install_cli(tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"edgeseg: error: /etc/edgeseg/front-door.yaml exists and differs from what {DEMO} gives (edited by "
        f"hand?): keep it and skip install, or remove it to install {DEMO}"
    ]
    config.unlink()
    dropin = tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf"
    dropin.write_bytes(dropin.read_bytes() + "# café\n".encode("latin-1"))
    assert "wrote /etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf" in _install(tmp_path)


def test_install_error_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "service", "install", "bad/name", "--pipeline", str(DEMO),
         "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith("edgeseg: error: service name 'bad/name'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_name_of_236_characters_installs_and_a_longer_one_is_refused_naming_the_limit(
    tmp_path: Path,
) -> None:
    """236 is what the longest file install writes (the config's temp file) leaves of a file name's 255."""
    longest, too_long = tmp_path / "longest", tmp_path / "too-long"
    _install(longest, "a" * 236)
    assert (longest / f"etc/edgeseg/{'a' * 236}.yaml").is_file()
    too_long.mkdir()
    with pytest.raises(ConfigError, match=r"237 characters, at most 236$"):
        _install(too_long, "a" * 237)
    assert list(too_long.iterdir()) == []


def test_install_where_it_may_not_write_is_one_line_naming_the_folder_and_exit_status_2(
    tmp_path: Path,
) -> None:
    """Without sudo, /etc/edgeseg could not be made: PermissionError's traceback instead of one line."""
    root = tmp_path / "root"
    root.mkdir()
    if os.geteuid() == 0:  # root writes past permission bits: a read-only file system refuses it too
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(root)], check=True)
    else:
        root.chmod(0o555)
    try:
        done = _install_cli(root)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(root)], check=False)
        else:
            root.chmod(0o755)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"edgeseg: error: service install: {root}/etc: "), line


def test_credentials_drop_in_lists_only_the_credential_files_that_exist(tmp_path: Path) -> None:
    creds = tmp_path / "etc/edgeseg/credentials/front-door"
    creds.mkdir(parents=True)
    (creds / "mqtt-username").write_text("cam")
    (creds / "mqtt-password").write_text("secret")
    _install(tmp_path)
    dropin = (tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
    loaded = re.findall(r"^LoadCredential=(.*)$", dropin, re.M)
    assert loaded == [
        "mqtt-username:/etc/edgeseg/credentials/front-door/mqtt-username",
        "mqtt-password:/etc/edgeseg/credentials/front-door/mqtt-password",
    ]


def test_doctor_service_fails_for_a_credential_file_the_unit_does_not_load_or_one_it_lists_but_lacks(
    tmp_path: Path,
) -> None:
    """A web-token put in /etc/edgeseg/credentials/NAME after install reaches the service only once install
    writes its LoadCredential= line, and a listed file removed fails the start (243/CREDENTIALS): doctor
    --service passed both (it read the folder, not the unit)."""
    _group_file(tmp_path)
    _install(tmp_path)
    creds = tmp_path / "etc/edgeseg/credentials/front-door"
    creds.mkdir(parents=True)
    (creds / "web-token").write_text(TOKEN_TEXT)
    assert _failed(service_checks("front-door", tmp_path), "credentials") == (
        "web-token in /etc/edgeseg/credentials/front-door but not given to the service (no LoadCredential=)"
    )
    _install(tmp_path)
    assert _failed(service_checks("front-door", tmp_path), "credentials") == ""
    (creds / "web-token").unlink()
    assert _failed(service_checks("front-door", tmp_path), "credentials") == (
        "LoadCredential= of a missing file, which fails the start (243/CREDENTIALS): web-token "
        "(/etc/edgeseg/credentials/front-door/web-token)"
    )


def test_doctor_service_finds_a_bare_load_credential_in_the_credential_store_and_says_when_none_is_there(
    tmp_path: Path,
) -> None:
    """`LoadCredential=web-token` (no path: systemd looks in /etc/credstore, /run/credstore and
    /usr/lib/credstore, systemd.exec(5)) was checked as the file '' under the root: "a missing file, which
    fails the start", also with /run/credstore/web-token there."""
    override = _installed(tmp_path, "sinks:\n", "sinks:\n  web:\n    listen: 0.0.0.0:8080\n")
    override.write_text("[Service]\nLoadCredential=web-token\n")
    _verifies(tmp_path)
    store = tmp_path / "run/credstore"
    store.mkdir(parents=True)
    (store / "web-token").write_text(TOKEN_TEXT)
    checks = service_checks("front-door", tmp_path)
    assert (_failed(checks, "credentials"), _failed(checks, "web page")) == ("", "")
    (store / "web-token").unlink()
    assert _failed(service_checks("front-door", tmp_path), "credentials") == (
        "LoadCredential= of a name in none of /etc/credstore, /run/credstore, /usr/lib/credstore, so the "
        "service starts without it (unless systemd itself was given one of that name): web-token"
    )


@needs_analyze
def test_doctor_service_expands_the_specifiers_of_a_drop_in_as_systemd_does(tmp_path: Path) -> None:
    """`LoadCredential=web-token:%E/credstore/%p/%I` in a drop-in: doctor expanded %i alone and reported
    the file '%E/credstore/%p/%I' missing (a start that fails, 243/CREDENTIALS) while the service got it."""
    override = _installed(tmp_path, "sinks:\n", "sinks:\n  web:\n    listen: 0.0.0.0:8080\n")
    override.write_text("[Service]\nLoadCredential=web-token:%E/credstore/%p/%I\n")
    _verifies(tmp_path)
    unescaped = subprocess.run(
        ["systemd-escape", "--unescape", "front-door"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    token = tmp_path / "etc/credstore/edgeseg" / unescaped
    token.parent.mkdir(parents=True)
    token.write_text(TOKEN_TEXT)
    checks = service_checks("front-door", tmp_path)
    assert (_failed(checks, "credentials"), _failed(checks, "web page")) == ("", "")
    token.unlink()
    assert _failed(service_checks("front-door", tmp_path), "credentials").endswith(
        f"web-token (/etc/credstore/edgeseg/{unescaped})"
    )


def test_doctor_service_takes_a_load_credential_of_a_socket_for_no_missing_file(tmp_path: Path) -> None:
    """`LoadCredential=web-token:/run/secrets/web.sock`, an AF_UNIX socket systemd reads the credential from
    at the start (systemd.exec(5)): doctor --service said "a missing file, which fails the start"."""
    import socket
    import tempfile

    pipeline = tmp_path / "web.yaml"
    pipeline.write_text(_demo().replace("sinks:\n", "sinks:\n  web:\n    listen: 0.0.0.0:8080\n"))
    # (not pytest's tmp_path: a socket's path must fit in 108 bytes)
    with tempfile.TemporaryDirectory() as tmp, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
        root = Path(tmp)
        _group_file(root)
        _install(root, pipeline=pipeline)
        (root / "run/secrets").mkdir(parents=True)
        agent.bind(str(root / "run/secrets/web.sock"))
        agent.listen()
        override = _dropin(root)
        override.write_text("[Service]\nLoadCredential=web-token:/run/secrets/web.sock\n")
        checks = service_checks("front-door", root)
        assert (_failed(checks, "credentials"), _failed(checks, "web page")) == ("", "")


def test_doctor_service_logs_in_to_the_broker_with_the_credentials_the_unit_loads_from_the_store(
    tmp_path: Path,
) -> None:
    """The MQTT user and password in /etc/credstore, given by `LoadCredential=mqtt-username` and
    `LoadCredential=mqtt-password` in a drop-in: the service logs in with them, doctor --service tried the
    broker with what /etc/edgeseg/credentials/NAME holds (nothing: anonymous) and failed "Not authorized"."""
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "right-secret"], check=True, timeout=60
    )
    passwd.chmod(0o644)
    locked = Broker(tmp_path / "broker", extra_config=f"password_file {passwd}\n")
    locked.config.write_text(
        locked.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    pipeline = tmp_path / "mqtt.yaml"
    pipeline.write_text(
        _demo().replace("sinks:\n  display:", f"sinks:\n  mqtt:\n    url: {locked.url}\n  display:")
    )
    root = tmp_path / "root"
    _group_file(root)
    _install(root, pipeline=pipeline)
    store = root / "etc/credstore"
    store.mkdir(parents=True)
    (store / "mqtt-username").write_text("edge")
    (store / "mqtt-password").write_text("right-secret")
    override = _dropin(root)
    override.write_text("[Service]\nLoadCredential=mqtt-username\nLoadCredential=mqtt-password\n")
    locked.start()
    try:
        checks = service_checks("front-door", root)
    finally:
        locked.stop()
    assert (_failed(checks, "credentials"), _failed(checks, "mqtt broker")) == ("", "")
    [broker] = [c for c in checks if c.name == "mqtt broker"]
    assert broker.detail.endswith("answers as edge (systemd credentials)"), broker.detail


def _doctor_as_a_user_on_root_only_credentials(
    pipeline: Path, credential: str
) -> tuple[Path, dict[str, str]]:
    """doctor --service run without sudo, as user nobody, on an install whose credentials folder holds
    ``credential`` and is root's alone (mode 0700, as the README makes it): the folder, and each check's
    detail by name."""
    import json
    import tempfile

    # (not pytest's tmp_path: it lies in a folder only root may enter)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _group_file(root)
        creds = root / "etc/edgeseg/credentials/front-door"
        creds.mkdir(parents=True)
        (creds / credential).write_text(TOKEN_TEXT)
        _install(root, pipeline=pipeline)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        creds.chmod(0o700)
        # the modules loaded first, as root: this environment's files may be root's alone
        code = (
            "import json, os, sys; from pathlib import Path; from edgeseg.doctor import service_checks; "
            "service_checks('front-door', Path(sys.argv[1])); os.setgid(65534); os.setuid(65534); "
            "print(json.dumps({c.name: c.detail for c in service_checks('front-door', Path(sys.argv[1]))}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, tmp], capture_output=True, text=True, timeout=120, check=False
        )
    assert done.returncode == 0, done.stderr
    return creds, json.loads(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="a folder only root may read needs root to make")
def test_doctor_service_run_without_root_says_it_cannot_read_the_credentials_instead_of_a_traceback() -> None:
    creds, details = _doctor_as_a_user_on_root_only_credentials(DEMO, "web-token")
    assert details["credentials"] == f"cannot read {creds}/web-token"


@pytest.mark.skipif(os.geteuid() != 0, reason="a folder only root may read needs root to make")
def test_doctor_service_run_without_root_on_an_mqtt_pipeline_says_it_cannot_read_the_credential(
    tmp_path: Path,
) -> None:
    """`edgeseg doctor --service NAME` without sudo ended in a PermissionError traceback from the broker check
    (the credentials folder is root's alone, as the README makes it)."""
    pipeline = tmp_path / "mqtt.yaml"
    mqtt = "sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1\n  display:"
    pipeline.write_text(_demo().replace("sinks:\n  display:", mqtt))
    creds, details = _doctor_as_a_user_on_root_only_credentials(pipeline, "mqtt-username")
    assert details["mqtt broker"] == (
        f"credential mqtt-username: cannot read {creds}/mqtt-username: Permission denied"
    )


def test_render_group_is_added_only_where_the_root_has_it(tmp_path: Path) -> None:
    host = tmp_path / "etc/systemd/system/edgeseg@.service.d/50-edgeseg-host.conf"
    _group_file(tmp_path)
    _install(tmp_path)
    assert not host.exists()
    _group_file(tmp_path, "video:x:44:\nrender:x:105:\n")
    _install(tmp_path)
    assert "SupplementaryGroups=render" in host.read_text()


@needs_analyze
def test_the_render_group_comes_with_its_device_nodes_allowed_past_device_policy_closed(
    tmp_path: Path,
) -> None:
    """The group is for /dev/dri/renderD*, which DevicePolicy=closed refused without a DeviceAllow= for them:
    "drm" in /proc/devices (the kernel's drivers/gpu/drm/drm_drv.c, register_chrdev(DRM_MAJOR, "drm"))."""
    _group_file(tmp_path, "video:x:44:\nrender:x:105:\n")
    _install(tmp_path)
    host = tmp_path / "etc/systemd/system/edgeseg@.service.d/50-edgeseg-host.conf"
    lines = host.read_text().splitlines()
    assert "SupplementaryGroups=render" in lines
    assert "DeviceAllow=char-drm rw" in lines
    _verifies(tmp_path)


def test_home_binds_are_the_outermost_folders_under_a_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = [home / "pi/venv", home / "pi/venv/lib", home / "pi/models", Path("/usr/lib"), home]
    assert home_binds([p for p in paths if p != home], [home]) == [home / "pi/models", home / "pi/venv"]


def test_shipped_unit_files_are_what_the_package_installs() -> None:
    for name in ("edgeseg@.service", "jetson.conf"):
        assert (REPO / "systemd" / name).read_text() == unit_file(name)


def test_the_unit_keeps_only_status_2_from_a_restart_and_readme_and_help_list_the_same_statuses() -> None:
    """2 (bad usage, configuration, input) is what a restart cannot fix; a run-time failure (4: a source
    that gave up, the port in use) had exited 2 too, and systemd never restarted it."""
    from edgeseg import cli

    assert re.findall(r"^RestartPreventExitStatus=(.*)$", unit_file("edgeseg@.service"), re.M) == ["2"]
    statuses = [cli.EXIT_OK, cli.EXIT_USAGE, cli.EXIT_LOST, cli.EXIT_TRANSIENT, cli.EXIT_INTERRUPTED]
    readme = (REPO / "README.md").read_text(encoding="utf-8").split("### Exit status", 1)[1]
    assert [int(n) for n in re.findall(r"^\| `(\d+)` \|", readme, re.M)] == statuses
    assert {int(n) for n in re.findall(r"(?:^exit status: |; )(\d+) ", cli.EXIT_CODES)} == set(statuses)


def test_a_bad_configuration_stops_the_jetson_unit_unrestarted_as_restart_prevent_status_2_says() -> None:
    """systemd applies RestartPreventExitStatus= to the main process's status only (src/core/service.c,
    service_shall_restart: ``exit_status_set_test(&s->restart_prevent_status, s->main_exec_status.code,
    ...)``; systemd.service(5): "when returned by the main service process"). A configuration error fails
    the Jetson drop-in's ``edgeseg service prepare`` first: its status 2 was a failed start, restarted every
    5 s until StartLimitBurst= gave up, each loading the model again. Its failure is now left to the main
    process ('-': recorded, the start goes on), which meets the same error and exits 2 itself."""
    (prepare,) = re.findall(r"^ExecStartPre=(.*)$", unit_file("jetson.conf"), re.M)
    assert prepare.startswith("-")
    assert prepare.endswith("edgeseg service prepare /etc/edgeseg/%i.yaml")
    (run,) = re.findall(r"^ExecStart=(.*)$", unit_file("edgeseg@.service"), re.M)
    assert run == prepare[1:].replace(" service prepare ", " run ")  # the same file, with the same errors


def test_prepare_loads_the_demo_model_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "service", "prepare", str(DEMO)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _failed(checks: list[Check], name: str) -> str:
    found = [c for c in checks if c.name == name]
    assert found, [c.name for c in checks]
    return "" if found[0].ok else found[0].detail


def test_doctor_service_passes_on_a_demo_install_including_watchdog_against_latency(tmp_path: Path) -> None:
    _group_file(tmp_path)
    _install(tmp_path)
    checks = service_checks("front-door", tmp_path)
    assert [c.detail for c in checks if not c.ok] == []
    watchdog = next(c for c in checks if c.name == "watchdog")
    assert "WatchdogSec=60 s, worst frame" in watchdog.detail


def test_doctor_service_fails_when_the_mqtt_flush_outlasts_the_units_stop_timeout(tmp_path: Path) -> None:
    """sinks.mqtt.flush_timeout_s takes up to a day, the unit's TimeoutStopSec=60s kills a longer stop: the
    unit ended failed at every stop with the broker away, its summary unwritten, and nothing had said so
    (nothing is lost: the spool stays on disk)."""
    pipeline = tmp_path / "flush.yaml"
    mqtt = "sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1\n    flush_timeout_s: {}\n  display:"
    root = tmp_path / "root"
    _group_file(root)
    for name, flush in (("short", 5), ("long", 600)):
        pipeline.write_text(_demo().replace("sinks:\n  display:", mqtt.format(flush)))
        _install(root, name, pipeline)
    short, long = (
        next(c for c in service_checks(name, root) if c.name == "stop timeout") for name in ("short", "long")
    )
    assert short.ok, short.detail
    assert not long.ok
    assert long.detail == "TimeoutStopSec=60s, a stop may take 638 s (sinks.mqtt.flush_timeout_s = 600 s)"
    assert "TimeoutStopSec= in a drop-in (edgeseg@long.service.d/)" in long.fix


def _flushing_install(root: Path, flush_timeout_s: int) -> Path:
    """:func:`_installed` with an MQTT sink that may flush for ``flush_timeout_s`` at a stop."""
    mqtt = f"sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1\n    flush_timeout_s: {flush_timeout_s}\n  display:"
    return _installed(root, "sinks:\n  display:", mqtt)


@needs_analyze
def test_doctor_service_reads_the_stop_timeout_of_timeoutsec_and_of_a_continued_line(tmp_path: Path) -> None:
    """A drop-in's TimeoutSec=20s sets TimeoutStopSec= too (systemd.service(5)): doctor kept the unit's 60 s
    and passed a stop that systemd kills at 20 s; TimeoutStopSec=1min \\ <newline> 30s, one value to
    systemd, was 'not a time span' to doctor."""
    override = _flushing_install(tmp_path, 5)

    def stop(dropin: str) -> Check:
        override.write_text(dropin)
        done = _analyze(tmp_path, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
        assert (done.returncode, done.stderr) == (0, "")  # systemd reads the drop-in without a complaint
        return next(c for c in service_checks("front-door", tmp_path) if c.name == "stop timeout")

    short = stop("[Service]\nTimeoutSec=20s\n")
    assert not short.ok
    assert short.detail.startswith("TimeoutStopSec=20s, a stop may take 43 s")
    continued = stop("[Service]\nTimeoutStopSec=1min \\\n  # (a comment line within it is dropped)\n  30s\n")
    assert continued.ok, continued.detail
    assert " ".join(continued.detail.split()).startswith("TimeoutStopSec=1min 30s, a stop may take 43 s")
    hidden = stop("[Service]\nEnvironment=A=1 \\\n  TimeoutStopSec=20s\n")  # (a value, not a key)
    assert hidden.ok, hidden.detail


@needs_analyze
def test_doctor_service_keeps_the_stop_timeout_an_empty_assignment_leaves_as_it_was(tmp_path: Path) -> None:
    """An empty TimeoutStopSec= in a drop-in (meant as "back to the default"?) is refused by systemd, which
    keeps the unit's 60 s; doctor took it for a reset to the 90 s default and passed a 68 s stop."""
    override = _flushing_install(tmp_path, 30)
    override.write_text("[Service]\nTimeoutStopSec=\n")
    done = _analyze(tmp_path, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
    assert "Failed to parse time value, ignoring" in done.stderr
    stop = next(c for c in service_checks("front-door", tmp_path) if c.name == "stop timeout")
    assert (stop.ok, stop.detail) == (
        False,
        "TimeoutStopSec=60s, a stop may take 68 s (sinks.mqtt.flush_timeout_s = 30 s)",
    )


@needs_analyze
def test_install_refuses_an_engine_cache_the_service_cannot_write_and_doctor_passes_what_it_installs(
    tmp_path: Path,
) -> None:
    """install bound an engine_cache_dir under /home in (BindPaths=), which the dynamic user cannot write
    unless any local user may, and took one elsewhere that ProtectSystem=strict keeps read-only, while doctor
    failed both: the engine's build failed at the service's start (status 2, never restarted)."""
    _group_file(tmp_path)
    pipeline = tmp_path / "cache.yaml"
    model = "backend: onnxruntime"
    state = "/var/lib/edgeseg/front-door"
    pipeline.write_text(_demo().replace(model, f"{model}\n  engine_cache_dir: /home/pi/engines"))
    done = _install_cli(tmp_path, pipeline)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"edgeseg: error: {pipeline}: model.engine_cache_dir is /home/pi/engines, which the service cannot "
        f"write (it writes only its state directory {state}): point it there, or remove the key (the service "
        f"then uses {state}/engines)"
    ]
    for cache in ("/var/cache/edgeseg", f"{state}/../other"):
        pipeline.write_text(_demo().replace(model, f"{model}\n  engine_cache_dir: {cache}"))
        with pytest.raises(ConfigError, match=r"model\.engine_cache_dir is .* the service cannot write"):
            _install(tmp_path, pipeline=pipeline)
    assert not (tmp_path / "etc/edgeseg").exists()
    pipeline.write_text(_demo().replace(model, f"{model}\n  engine_cache_dir: {state}/engines"))
    _install(tmp_path, pipeline=pipeline)
    _verifies(tmp_path)
    assert _failed(service_checks("front-door", tmp_path), "engine cache") == ""


def test_doctor_service_fails_when_the_model_lies_in_a_home_folder_the_unit_hides(tmp_path: Path) -> None:
    # /etc/edgeseg/NAME.yaml edited (README: then `systemctl reload`) to a model under /home or /root: the
    # model check looked at the file from outside the unit and passed, while ProtectHome= hides it
    import tempfile

    if not any(Path.home() == h or h in Path.home().parents for h in (Path("/home"), Path("/root"))):
        pytest.skip("the home folder is not under /home or /root")
    _group_file(tmp_path)
    _install(tmp_path)
    with tempfile.TemporaryDirectory(dir=Path.home()) as home:
        model = Path(home) / "models" / "demo-parts.onnx"
        model.parent.mkdir()
        shutil.copy(REPO / "models" / "demo-parts.onnx", model)
        shutil.copy(REPO / "models" / "demo-parts.yaml", model.parent)  # (its card)
        etc = tmp_path / "etc/edgeseg/front-door.yaml"
        etc.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", etc.read_text()))
        assert load_config(etc, env={}).model.path == model
        assert "hidden by ProtectHome=" in _failed(service_checks("front-door", tmp_path), "model")
        # installed from a pipeline file that names it, the unit binds the folder in
        pipeline = tmp_path / "home.yaml"
        pipeline.write_text(etc.read_text())
        etc.unlink()
        _install(tmp_path, pipeline=pipeline)
        assert _failed(service_checks("front-door", tmp_path), "model") == ""
        # without ProtectHome=tmpfs, whose folders above the bind are 0755, the home folder's own mode counts
        if not Path.home().stat().st_mode & stat.S_IXOTH:
            override = _dropin(tmp_path)
            override.write_text("[Service]\nProtectHome=no\n")
            assert f"may not enter {Path.home()} " in _failed(service_checks("front-door", tmp_path), "model")


def test_install_refuses_a_model_in_tmp_and_doctor_fails_one_the_unit_hides_there(tmp_path: Path) -> None:
    """A model under /tmp or /var/tmp (a download, a checkout there) was installed and passed by doctor: the
    unit's private /tmp (DynamicUser= implies PrivateTmp=) hides it, and the service ended at its start
    'model file not found' (status 2, never restarted). The root's /tmp is ROOT/tmp under --root."""
    root = tmp_path / "root"
    _group_file(root)
    for tmp in ("tmp", "var/tmp"):
        model = root / tmp / "models" / "demo-parts.onnx"
        model.parent.mkdir(parents=True)
        shutil.copy(REPO / "models" / "demo-parts.onnx", model)
        shutil.copy(REPO / "models" / "demo-parts.yaml", model.parent)  # (its card)
        pipeline = tmp_path / "tmp.yaml"
        pipeline.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", _demo()))
        with pytest.raises(ConfigError, match=f"the service would not see {model.parent}: its /tmp and"):
            _install(root, pipeline=pipeline)
        assert not (root / "etc/edgeseg").exists()
    # the copy in /etc edited to name it (README: then `systemctl reload`)
    _install(root)
    etc = root / "etc/edgeseg/front-door.yaml"
    etc.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", etc.read_text()))
    (found,) = [c for c in service_checks("front-door", root) if c.name == "model"]
    assert (found.ok, found.detail) == (
        False,
        f"{model}: under /tmp or /var/tmp, hidden by the unit's own (PrivateTmp=, implied by DynamicUser=)",
    )
    # and the command of an environment there
    command = root / "tmp/venv/bin/edgeseg"
    override = _dropin(root)
    override.write_text(f"[Service]\nExecStart=\nExecStart={command} run /etc/edgeseg/%i.yaml\n")
    assert _failed(service_checks("front-door", root), "command").startswith(f"{command}: under /tmp")


def test_a_model_reached_through_a_link_into_a_home_folder_is_shown_to_the_service(tmp_path: Path) -> None:
    """model.path /opt/models/x.onnx, /opt/models a link to /home/pi/models: install bound nothing (the path
    is not under /home) and doctor passed, while ProtectHome= hides where the link leads: the service ended
    at its start 'model file not found'."""
    import tempfile

    if not any(Path.home() == h or h in Path.home().parents for h in (Path("/home"), Path("/root"))):
        pytest.skip("the home folder is not under /home or /root")
    root = tmp_path / "root"
    _group_file(root)
    _install(root)
    # (the link not in pytest's tmp_path: it lies in a folder only root may enter)
    with tempfile.TemporaryDirectory(dir=Path.home()) as home, tempfile.TemporaryDirectory() as opt:
        Path(opt).chmod(0o755)
        models = Path(home) / "models"
        models.mkdir()
        shutil.copy(REPO / "models" / "demo-parts.onnx", models)
        shutil.copy(REPO / "models" / "demo-parts.yaml", models)  # (its card)
        (Path(opt) / "models").symlink_to(models)
        model = Path(opt) / "models" / "demo-parts.onnx"
        # the copy in /etc edited to name it: no bind
        etc = root / "etc/edgeseg/front-door.yaml"
        etc.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", etc.read_text()))
        assert "hidden by ProtectHome=" in _failed(service_checks("front-door", root), "model")
        # installed from a pipeline file that names it, the unit binds the folder the link leads to in
        pipeline = tmp_path / "linked.yaml"
        pipeline.write_text(etc.read_text())
        etc.unlink()
        _install(root, pipeline=pipeline)
        dropin = (root / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
        [binds] = re.findall(r"^BindReadOnlyPaths=(.*)$", dropin, re.M)
        assert f'"{models}"' in binds.split()
        assert _failed(service_checks("front-door", root), "model") == ""


def test_the_model_file_of_a_card_given_as_model_path_is_shown_to_the_service(tmp_path: Path) -> None:
    """model.path a card YAML whose `file:` names weights in a home folder: install bound the card's folder
    alone and doctor checked the card, while ProtectHome= hides the weights the service loads."""
    import tempfile

    if not any(Path.home() == h or h in Path.home().parents for h in (Path("/home"), Path("/root"))):
        pytest.skip("the home folder is not under /home or /root")
    root = tmp_path / "root"
    _group_file(root)
    with tempfile.TemporaryDirectory(dir=Path.home()) as home, tempfile.TemporaryDirectory() as opt:
        Path(opt).chmod(0o755)  # (not pytest's tmp_path: it lies in a folder only root may enter)
        weights = Path(home) / "weights" / "demo-parts.onnx"
        weights.parent.mkdir()
        shutil.copy(REPO / "models" / "demo-parts.onnx", weights)
        card = Path(opt) / "parts.yaml"
        text = (REPO / "models" / "demo-parts.yaml").read_text()
        card.write_text(text.replace("file: demo-parts.onnx", f"file: {weights}"))
        pipeline = tmp_path / "card.yaml"
        pipeline.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {card}", _demo()))
        _install(root, pipeline=pipeline)
        dropin = (root / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
        [binds] = re.findall(r"^BindReadOnlyPaths=(.*)$", dropin, re.M)
        assert f'"{weights.parent}"' in binds.split()
        checks = service_checks("front-door", root)
        assert (_failed(checks, "model"), _failed(checks, "model file")) == ("", "")
        weights.chmod(0o600)
        assert _failed(service_checks("front-door", root), "model file") == str(weights)


def test_doctor_service_sees_a_model_in_a_bound_home_folder_whose_name_has_percent_i(tmp_path: Path) -> None:
    # install writes the folder with '%' doubled ("100%%ideal"): doctor expanded the %i in "%%i" to the
    # instance name and said the model was hidden by ProtectHome=, where systemd binds "100%ideal"
    import tempfile

    if not any(Path.home() == h or h in Path.home().parents for h in (Path("/home"), Path("/root"))):
        pytest.skip("the home folder is not under /home or /root")
    _group_file(tmp_path)
    with tempfile.TemporaryDirectory(dir=Path.home()) as home:
        model = Path(home) / "100%ideal" / "demo-parts.onnx"
        model.parent.mkdir()
        shutil.copy(REPO / "models" / "demo-parts.onnx", model)
        shutil.copy(REPO / "models" / "demo-parts.yaml", model.parent)  # (its card)
        pipeline = tmp_path / "home.yaml"
        pipeline.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", _demo()))
        _install(tmp_path, pipeline=pipeline)
        assert _failed(service_checks("front-door", tmp_path), "model") == ""


def test_doctor_service_fails_when_the_source_file_is_hidden_or_missing(tmp_path: Path) -> None:
    """source.uri edited (README: then `systemctl reload`) to a video under /home or /root, or to a file
    that is not there: doctor checked the model alone and passed, and the service ended 'file not found'."""
    import tempfile

    if not any(Path.home() == h or h in Path.home().parents for h in (Path("/home"), Path("/root"))):
        pytest.skip("the home folder is not under /home or /root")
    _group_file(tmp_path)
    _install(tmp_path)
    etc = tmp_path / "etc/edgeseg/front-door.yaml"
    installed = etc.read_text()
    with tempfile.TemporaryDirectory(dir=Path.home()) as home:
        clip = Path(home) / "door.mp4"
        clip.write_bytes(b"")
        etc.write_text(installed.replace("synthetic:parts?fps=30", str(clip)))
        hidden = _failed(service_checks("front-door", tmp_path), "source file")
        assert hidden == f"{clip}: under a home folder, hidden by ProtectHome="
    etc.write_text(installed.replace("synthetic:parts?fps=30", "/srv/clips/door.mp4"))
    (found,) = [c for c in service_checks("front-door", tmp_path) if c.name == "source file"]
    assert (found.ok, found.detail, found.fix) == (False, "/srv/clips/door.mp4", "fix source.uri")
    etc.write_text(installed.replace("synthetic:parts?fps=30", f"'{REPO}/tests/golden/*.json'"))
    assert _failed(service_checks("front-door", tmp_path), "source file") == ""


def test_doctor_service_reports_a_missing_model_instead_of_ending_on_it(tmp_path: Path) -> None:
    # the watchdog check times the model: a model.path that names no file ended the whole report in
    # 'edgeseg: error: model file not found', the failing model check and every other one unshown
    _group_file(tmp_path)
    _install(tmp_path)
    etc = tmp_path / "etc/edgeseg/front-door.yaml"
    etc.write_text(etc.read_text().replace("demo-parts.onnx", "missing.onnx"))
    checks = service_checks("front-door", tmp_path)
    assert _failed(checks, "model").endswith("missing.onnx")
    assert "model file not found" in _failed(checks, "watchdog")


def test_doctor_service_on_a_missing_model_says_to_fix_the_path_not_its_permissions(tmp_path: Path) -> None:
    # its fix said "the dynamic user reads it as 'other': chmod o+r" for a file that is not there
    _group_file(tmp_path)
    _install(tmp_path)
    etc = tmp_path / "etc/edgeseg/front-door.yaml"
    etc.write_text(etc.read_text().replace("demo-parts.onnx", "missing.onnx"))
    (model,) = [c for c in service_checks("front-door", tmp_path) if c.name == "model"]
    assert (model.ok, model.fix) == (False, "fix model.path")


def _fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> Any:
    """tests/test_tensorrt_fake's stand-ins for tensorrt and pycuda.driver, importable as those, with engines
    of the demo model's tensors (all outputs zero)."""
    from test_tensorrt_fake import FakeCuda, make_trt

    cuda = FakeCuda()
    shape = [1, 1, 480, 640]
    layout = [("image", "input", [1, 3, 480, 640])] + [
        (name, "output", shape) for name in ("classes", "confidence", "contact")
    ]
    types = {"image": "uint8", "classes": "uint8", "contact": "uint8"}
    zeros = {
        name: np.zeros(shape, types.get(name, "float32")) for name in ("classes", "confidence", "contact")
    }
    trt = make_trt(cuda, layout, dtypes=types, compute=lambda _: zeros)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", SimpleNamespace(driver=cuda))
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt


def test_doctor_service_times_a_tensorrt_model_with_the_services_engine_and_builds_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog check loaded the model as the user running doctor: with no engine in that user's cache
    it built one there (minutes on a Jetson, hundreds of MB in root's ~/.local/state), never the service's."""
    trt = _fake_tensorrt(monkeypatch)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "doctor-state"))
    monkeypatch.delenv("EDGESEG_ENGINE_CACHE", raising=False)
    _group_file(tmp_path)
    pipeline = tmp_path / "trt.yaml"
    pipeline.write_text(_demo().replace("backend: onnxruntime", "backend: tensorrt"))
    _install(tmp_path, pipeline=pipeline, jetson=False)
    assert "no TensorRT engine" in _failed(service_checks("front-door", tmp_path), "watchdog")
    assert trt.state.builds == 0
    assert not (tmp_path / "doctor-state").exists()
    # the service's start (its ExecStartPre= on a Jetson) builds it in its state directory: doctor times that
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var/lib/edgeseg/front-door"))
    prepare(load_config(tmp_path / "etc/edgeseg/front-door.yaml", env={}))
    monkeypatch.delenv("STATE_DIRECTORY")
    watchdog = next(c for c in service_checks("front-door", tmp_path) if c.name == "watchdog")
    assert "WatchdogSec=60 s, worst frame" in watchdog.detail
    assert (trt.state.builds, trt.state.deserialized) == (1, 2)  # prepare's build, and its load and doctor's
    assert not (tmp_path / "doctor-state").exists()


@needs_analyze
def test_doctor_service_reads_an_instance_drop_in_instead_of_the_templates_of_the_same_name(
    tmp_path: Path,
) -> None:
    """`systemctl edit edgeseg@` and `systemctl edit edgeseg@front-door` both write override.conf: systemd
    reads the instance's alone (verify warns only about its unknown key), doctor read both and so judged a
    WatchdogSec=0 that the service never gets."""
    _group_file(tmp_path)
    _install(tmp_path)
    units = tmp_path / "etc/systemd/system"
    (units / "edgeseg@.service.d").mkdir(exist_ok=True)
    (units / "edgeseg@.service.d/override.conf").write_text("[Service]\nWatchdogSec=0\nTemplateKey=1\n")
    (units / "edgeseg@front-door.service.d/override.conf").write_text("[Service]\nInstanceKey=1\n")
    done = _analyze(tmp_path, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
    assert "Unknown key 'InstanceKey'" in done.stderr
    assert "TemplateKey" not in done.stderr
    watchdog = next(c for c in service_checks("front-door", tmp_path) if c.name == "watchdog")
    assert watchdog.ok, watchdog.detail
    assert "WatchdogSec=60 s, worst frame" in watchdog.detail


@needs_analyze
@needs_analyze
def test_doctor_service_reads_the_unit_and_drop_ins_of_run_and_lib_as_systemd_does(tmp_path: Path) -> None:
    """doctor read /etc/systemd/system alone: a drop-in of `systemctl edit --runtime` (/run/systemd/system)
    that turned the watchdog off passed unseen, and a template a package put in /lib/systemd/system was "no
    unit"."""
    _group_file(tmp_path)
    _install(tmp_path)
    lib = tmp_path / "lib/systemd/system"
    lib.mkdir(parents=True)
    (tmp_path / "etc/systemd/system/edgeseg@.service").rename(lib / "edgeseg@.service")
    runtime = tmp_path / "run/systemd/system/edgeseg@front-door.service.d"
    runtime.mkdir(parents=True)
    (runtime / "override.conf").write_text("[Service]\nWatchdogSec=0\nPrivateNetwork=yes\n")
    # systemd reads both from there (its --root takes the same folders under the root as on a machine)
    done = subprocess.run(
        [ANALYZE or "systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager",
         "edgeseg@front-door.service"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert re.search(r"✓ PrivateNetwork=", done.stdout), done.stdout + done.stderr
    checks = service_checks("front-door", tmp_path)
    assert _failed(checks, "watchdog") == "WatchdogSec=0: a stalled pipeline would not be restarted"
    # one of the same name in /etc hides it
    etc = tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/override.conf"
    etc.write_text("[Service]\nWatchdogSec=30s\n")
    assert _failed(service_checks("front-door", tmp_path), "watchdog") == ""


@needs_analyze
def test_doctor_service_reads_a_drop_in_edited_into_latin_1_as_systemd_does(tmp_path: Path) -> None:
    """A drop-in saved by an editor in latin-1 ("# café"): systemd reads it, doctor --service ended in a
    UnicodeDecodeError traceback."""
    override = _installed(tmp_path)
    override.write_bytes("[Service]\n# café\nWatchdogSec=0\n".encode("latin-1"))
    _verifies(tmp_path)
    assert _failed(service_checks("front-door", tmp_path), "watchdog") == (
        "WatchdogSec=0: a stalled pipeline would not be restarted"
    )


@needs_analyze
def test_doctor_service_reads_nothing_from_a_drop_in_linked_to_nothing_and_lets_it_hide_its_name(
    tmp_path: Path,
) -> None:
    """override.conf in /etc a link to a file since removed: doctor --service ended in a FileNotFoundError
    traceback; systemd reads nothing from it, and the /run drop-in of its name stays hidden."""
    _group_file(tmp_path)
    _install(tmp_path)
    runtime = tmp_path / "run/systemd/system/edgeseg@front-door.service.d"
    runtime.mkdir(parents=True)
    (runtime / "override.conf").write_text("[Service]\nWatchdogSec=0\nPrivateNetwork=yes\n")
    gone = tmp_path / "etc/systemd/system/edgeseg@front-door.service.d/override.conf"
    gone.symlink_to("/opt/removed/override.conf")
    done = subprocess.run(
        [ANALYZE or "systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager",
         "edgeseg@front-door.service"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert re.search(r"✗ PrivateNetwork=", done.stdout), done.stdout + done.stderr
    assert _failed(service_checks("front-door", tmp_path), "watchdog") == ""


@needs_analyze
@pytest.mark.parametrize("unit", ["edgeseg@front-door.service", "edgeseg@.service"])
def test_doctor_service_fails_on_a_masked_instance_or_template(tmp_path: Path, unit: str) -> None:
    """`systemctl mask` (a link to /dev/null in /etc/systemd/system) makes systemd refuse every start:
    doctor took the link for no file, read the template (or the next one) and passed."""
    _group_file(tmp_path)
    _install(tmp_path)
    lib = tmp_path / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    shutil.copy(tmp_path / "etc/systemd/system/edgeseg@.service", lib)
    mask = tmp_path / "etc/systemd/system" / unit
    mask.unlink(missing_ok=True)
    mask.symlink_to("/dev/null")
    done = subprocess.run(
        [ANALYZE or "systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager",
         "edgeseg@front-door.service"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Unit edgeseg@front-door.service is masked." in done.stdout + done.stderr
    (found,) = service_checks("front-door", tmp_path)
    assert (found.name, found.ok, found.fix) == ("unit", False, f"systemctl unmask {unit}")
    assert found.detail == f"masked: {mask} is empty or a link to /dev/null, so systemd refuses to start it"


@pytest.mark.parametrize("unit", ["edgeseg@front-door.service", "edgeseg@.service"])
def test_install_over_a_masked_instance_or_template_refuses_in_one_line_and_keeps_the_mask(
    tmp_path: Path, unit: str
) -> None:
    """An install run again after `systemctl mask edgeseg@.service` wrote the template over the link to
    /dev/null: every instance unmasked without a word (a masked instance: files written, then `enable --now`
    refused)."""
    _group_file(tmp_path)
    _install(tmp_path)
    mask = tmp_path / "etc/systemd/system" / unit
    mask.unlink(missing_ok=True)
    mask.symlink_to("/dev/null")
    before = _tree(tmp_path)
    done = _install_cli(tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"edgeseg: error: edgeseg@front-door.service is masked (/etc/systemd/system/{unit} is empty or a "
        f"link to /dev/null): install leaves it so; to install and run it, systemctl unmask {unit} first"
    ]
    assert _tree(tmp_path) == before
    assert os.readlink(mask) == "/dev/null"


def test_doctor_service_says_a_drop_in_emptied_execstart_instead_of_a_traceback(tmp_path: Path) -> None:
    """`systemctl edit` with `ExecStart=` alone (the first half of replacing the command): doctor ended in
    an IndexError traceback, where systemd says the unit has no ExecStart= and refuses it."""
    override = _installed(tmp_path)
    override.write_text("[Service]\nExecStart=\n")
    done = _analyze(tmp_path, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
    assert "Service has no ExecStart=" in done.stderr
    checks = service_checks("front-door", tmp_path)
    assert [(c.name, c.ok) for c in checks] == [("unit", False)]
    assert checks[0].detail.startswith("ExecStart= emptied by a drop-in and not set again")


@needs_analyze
def test_doctor_service_finds_the_command_of_an_execstart_with_a_prefix(tmp_path: Path) -> None:
    """`ExecStart=-/opt/edgeseg/venv/bin/edgeseg run ...` (a drop-in's, "-": its failure ignored) was
    checked as the file '-/opt/...', which is nowhere: doctor said the command was missing."""
    command = f"{Path(sys.executable).parent}/edgeseg"
    override = _installed(tmp_path)
    override.write_text(f"[Service]\nExecStart=\nExecStart=-{command} run /etc/edgeseg/%i.yaml\n")
    _verifies(tmp_path)
    found = next(c for c in service_checks("front-door", tmp_path) if c.name == "command")
    assert (found.ok, found.detail) == (True, command)


@needs_analyze
def test_doctor_service_finds_a_command_given_by_its_name_alone_where_systemd_finds_it(
    tmp_path: Path,
) -> None:
    """`ExecStart=edgeseg run ...` in a drop-in (an edgeseg in /usr/local/bin, pipx's): systemd looks the
    name up in its fixed search path, doctor looked for the file 'edgeseg' in the folder it ran from and said
    the command was missing."""
    override = _installed(tmp_path)
    # (python3: a name this machine has in /usr/bin, and no test may add one there)
    override.write_text("[Service]\nExecStart=\nExecStart=python3 -m edgeseg run /etc/edgeseg/%i.yaml\n")
    _verifies(tmp_path)
    found = next(c for c in service_checks("front-door", tmp_path) if c.name == "command")
    assert found.ok, found
    assert Path(found.detail).name == "python3"
    assert str(Path(found.detail).parent) in doctor.EXEC_SEARCH_PATH.split(":")
    override.write_text("[Service]\nExecStart=\nExecStart=no-such-edgeseg run /etc/edgeseg/%i.yaml\n")
    assert (
        "is not executable" in _analyze(tmp_path, "verify", "--man=no", "edgeseg@front-door.service").stderr
    )
    assert _failed(service_checks("front-door", tmp_path), "command") == "no-such-edgeseg"


def test_doctor_service_fails_for_an_mqtt_file_the_services_user_cannot_read(tmp_path: Path) -> None:
    """sinks.mqtt.password_file, mode 0600 as secrets are: the service's dynamic user reads it as "other"
    and cannot, so it ended at its start (status 2); doctor, run as root, read it and passed."""
    import tempfile

    # (not pytest's tmp_path: it lies in a folder only root may enter)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        secret = Path(tmp) / "secrets" / "password"
        secret.parent.mkdir()
        secret.write_text("secret")
        secret.chmod(0o600)
        (secret.parent / "user").write_text("cam")
        pipeline = tmp_path / "mqtt.yaml"
        mqtt = "sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1\n    username_file: {}\n    password_file: {}\n"
        mqtt += "  display:"
        text = _demo().replace("sinks:\n  display:", mqtt.format(secret.parent / "user", secret))
        pipeline.write_text(text)
        root = tmp_path / "root"
        _group_file(root)
        _install(root, pipeline=pipeline)
        found = next(c for c in service_checks("front-door", root) if c.name == "mqtt files")
        assert (found.ok, found.detail) == (
            False,
            f"{secret}: not readable by the service's dynamic user ('other')",
        )
        assert "/etc/edgeseg/credentials/front-door/mqtt-password" in found.fix
        # as a credential, the file is not read
        creds = root / "etc/edgeseg/credentials/front-door"
        creds.mkdir(parents=True)
        (creds / "mqtt-password").write_text("secret")
        _install(root, pipeline=pipeline)
        assert _failed(service_checks("front-door", root), "mqtt files") == ""


def test_install_refuses_a_relative_mqtt_file_the_service_would_read_from_slash_in_one_line(
    tmp_path: Path,
) -> None:
    """`username_file: secrets/user`, read from the folder `edgeseg run` starts in (where it worked), was
    installed as written: the service, which starts in /, ended at its start 'cannot read /secrets/user'
    (status 2, never restarted), and install had said nothing."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "user").write_text("cam")
    pipeline = tmp_path / "mqtt.yaml"
    mqtt = "sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1\n    username_file: secrets/user\n  display:"
    pipeline.write_text(_demo().replace("sinks:\n  display:", mqtt))
    root = tmp_path / "root"
    done = _install_cli(root, pipeline, cwd=tmp_path)
    assert done.returncode == 2
    creds = "/etc/edgeseg/credentials/front-door"
    assert done.stderr.splitlines() == [
        f"edgeseg: error: {pipeline}: sinks.mqtt.username_file is secrets/user, read from the folder a run "
        "starts in, and the service's is / (it would read /secrets/user): give the whole path, or the file "
        f"as the credential {creds}/mqtt-username"
    ]
    assert not (root / "etc").exists()
    # given as the credential, the file is not read
    (root / creds.lstrip("/")).mkdir(parents=True)
    (root / creds.lstrip("/") / "mqtt-username").write_text("cam")
    _install(root, pipeline=pipeline)
    dropin = (root / "etc/systemd/system/edgeseg@front-door.service.d/50-edgeseg.conf").read_text()
    assert f"LoadCredential=mqtt-username:{creds}/mqtt-username" in dropin.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root")
def test_doctor_service_fails_for_a_model_or_mqtt_file_in_a_folder_the_services_user_cannot_enter(
    tmp_path: Path,
) -> None:
    """A model (or a sinks.mqtt file) mode 0644 in a folder mode 0700: doctor looked at the file's own "other"
    bit and passed, while the service's dynamic user, "other" to the folder, cannot reach it and ended at
    its start."""
    import tempfile

    root = tmp_path / "root"
    _group_file(root)
    # (not pytest's tmp_path: it lies in a folder only root may enter)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        closed = Path(tmp) / "closed"
        (closed / "models").mkdir(parents=True, mode=0o755)
        closed.chmod(0o700)
        model = closed / "models" / "demo-parts.onnx"
        shutil.copy(REPO / "models" / "demo-parts.onnx", model)
        shutil.copy(REPO / "models" / "demo-parts.yaml", model.parent)  # (its card)
        (closed / "user").write_text("cam")
        for path in (model, model.parent / "demo-parts.yaml", closed / "user"):
            path.chmod(0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(model)]
        assert subprocess.run(nobody, capture_output=True, timeout=60, check=False).returncode != 0
        pipeline = tmp_path / "closed.yaml"
        mqtt = (
            f"sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1\n    username_file: {closed / 'user'}\n  display:"
        )
        text = re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", _demo())
        pipeline.write_text(text.replace("sinks:\n  display:", mqtt))
        _install(root, pipeline=pipeline)
        checks = service_checks("front-door", root)
        why = f"the service's dynamic user may not enter {closed} ('other' has no x)"
        assert _failed(checks, "model") == f"{model}: {why}"
        assert _failed(checks, "mqtt files") == f"{closed / 'user'}: {why}"
        closed.chmod(0o711)
        assert subprocess.run(nobody, capture_output=True, timeout=60, check=False).returncode == 0
        checks = service_checks("front-door", root)
        assert (_failed(checks, "model"), _failed(checks, "mqtt files")) == ("", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root")
def test_doctor_service_fails_for_a_command_the_services_user_cannot_reach_or_run(tmp_path: Path) -> None:
    """An environment in a folder mode 0700 (or its edgeseg mode 0750): doctor, run as root, asked os.access,
    which says yes to root, and passed the command, while the service's dynamic user could not run it and
    the unit failed at every start (203/EXEC)."""
    import tempfile

    root = tmp_path / "root"
    _group_file(root)
    with tempfile.TemporaryDirectory() as tmp:  # (not pytest's tmp_path: only root may enter it)
        Path(tmp).chmod(0o755)
        closed = Path(tmp) / "closed"
        command = closed / "venv" / "bin" / "edgeseg"
        command.parent.mkdir(parents=True)
        shutil.copy(Path(sys.executable).parent / "edgeseg", command)
        command.chmod(0o755)
        closed.chmod(0o700)
        _install(root, bin_path=command)

        def runs() -> bool:
            nobody = [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "test",
                "-x",
                str(command),
            ]
            return subprocess.run(nobody, timeout=60, check=False).returncode == 0

        def doctor() -> str:
            return _failed(service_checks("front-door", root), "command")

        assert not runs()
        assert doctor() == f"{command}: the service's dynamic user may not enter {closed} ('other' has no x)"
        closed.chmod(0o711)
        assert (runs(), doctor()) == (True, "")
        command.chmod(0o750)
        assert not runs()
        assert doctor() == f"{command}: the service's dynamic user may not run it ('other' has no x)"


def test_doctor_service_fails_for_a_model_card_the_services_user_cannot_read(tmp_path: Path) -> None:
    """The model 0644 and its card beside it 0600: doctor checked the model alone and passed, while the
    service, reading the card as "other", ended at its start (status 2, never restarted)."""
    import tempfile

    root = tmp_path / "root"
    _group_file(root)
    with tempfile.TemporaryDirectory() as opt:
        Path(opt).chmod(0o755)  # (not pytest's tmp_path: it lies in a folder only root may enter)
        model = Path(opt) / "demo-parts.onnx"
        shutil.copy(REPO / "models" / "demo-parts.onnx", model)
        shutil.copy(REPO / "models" / "demo-parts.yaml", Path(opt))
        model.chmod(0o644)
        (Path(opt) / "demo-parts.yaml").chmod(0o600)
        pipeline = tmp_path / "card.yaml"
        pipeline.write_text(re.sub(r"(?m)^  path: .*demo-parts.onnx", f"  path: {model}", _demo()))
        _install(root, pipeline=pipeline)
        checks = service_checks("front-door", root)
        assert (_failed(checks, "model"), _failed(checks, "model card")) == (
            "",
            f"{Path(opt)}/demo-parts.yaml",
        )
        (Path(opt) / "demo-parts.yaml").chmod(0o644)
        assert _failed(service_checks("front-door", root), "model card") == ""


def test_doctor_service_fails_for_a_web_page_the_service_cannot_serve(tmp_path: Path) -> None:
    """sinks.web.listen on 0.0.0.0 without a web-token credential (the unit's one source of a token), or on
    port 80 (the unit grants no CAP_NET_BIND_SERVICE): the service ended at its start, status 2, never
    restarted, and doctor --service had passed."""
    pipeline = tmp_path / "web.yaml"
    root = tmp_path / "root"
    _group_file(root)

    def web(listen: str) -> str:
        pipeline.write_text(_demo().replace("sinks:\n", f"sinks:\n  web:\n    listen: {listen}\n"))
        (root / "etc/edgeseg/front-door.yaml").unlink(missing_ok=True)
        _install(root, pipeline=pipeline)
        return _failed(service_checks("front-door", root), "web page")

    assert web("0.0.0.0:8080") == (
        "sinks.web.listen 0.0.0.0:8080 needs a token: the unit gives none (no LoadCredential=web-token)"
    )
    assert web("127.0.0.1:80").startswith(
        "sinks.web.listen 127.0.0.1:80: the service may not bind a port below"
    )
    assert web("127.0.0.1:8080") == ""
    creds = root / "etc/edgeseg/credentials/front-door"
    creds.mkdir(parents=True)
    (creds / "web-token").write_text(TOKEN_TEXT)
    assert web("0.0.0.0:8080") == ""


@needs_analyze
def test_doctor_service_takes_a_bounding_set_of_all_but_cap_net_bind_service_as_not_granting_it(
    tmp_path: Path,
) -> None:
    """CapabilityBoundingSet=~CAP_NET_BIND_SERVICE ("all but this one") in a drop-in counted as granting it:
    doctor passed a web page on port 80 that the service cannot bind (status 2 at its start)."""
    override = _installed(tmp_path, "sinks:\n", "sinks:\n  web:\n    listen: 127.0.0.1:80\n")
    elevated = "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW) Service has elevated"

    def doctor(bounding: str) -> str:
        override.write_text(f"[Service]\n{bounding}\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n")
        done = subprocess.run(
            [ANALYZE or "systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager",
             "edgeseg@front-door.service"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        granted = re.search(r"✗ " + re.escape(elevated), done.stdout) is not None
        found = _failed(service_checks("front-door", tmp_path), "web page")
        assert (found == "") == granted, (found, done.stdout)
        return found

    assert "may not bind a port below" in doctor("CapabilityBoundingSet=~CAP_NET_BIND_SERVICE")
    assert doctor("CapabilityBoundingSet=CAP_NET_BIND_SERVICE") == ""
    # the unit's empty set is not unset: "all but CAP_SYS_ADMIN" merged with it is still empty
    assert "may not bind a port below" in doctor("CapabilityBoundingSet=~CAP_SYS_ADMIN")


@needs_analyze
def test_doctor_service_ignores_a_drop_in_line_of_unbalanced_quotes_as_systemd_does(tmp_path: Path) -> None:
    """ExecStart="/opt/.../edgeseg run (a quote left open in a hand-written drop-in), or such a
    BindReadOnlyPaths=: doctor --service ended in shlex's ValueError traceback, where systemd ignores the
    line ("Unbalanced quoting, ignoring")."""
    _group_file(tmp_path)
    _install(tmp_path)
    etc = tmp_path / "etc/edgeseg/front-door.yaml"
    etc.write_text(
        re.sub(r"(?m)^  path: .*demo-parts.onnx", "  path: /home/pi/demo-parts.onnx", etc.read_text())
    )
    override = _dropin(tmp_path)
    override.write_text('[Service]\nProtectHome=tmpfs\nBindReadOnlyPaths="/home/pi\n')
    done = _analyze(tmp_path, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
    assert "Failed to parse BindReadOnlyPaths, ignoring" in done.stderr
    assert "hidden by ProtectHome=" in _failed(service_checks("front-door", tmp_path), "model")
    command = f"{Path(sys.executable).parent}/edgeseg"
    override.write_text(f'[Service]\nExecStart=\nExecStart="{command} run /etc/edgeseg/%i.yaml\n')
    done = _analyze(tmp_path, "verify", "--man=no", "--generators=no", "edgeseg@front-door.service")
    assert "Unbalanced quoting, ignoring" in done.stderr
    assert "Service has no ExecStart=" in done.stderr
    checks = service_checks("front-door", tmp_path)
    assert [(c.name, c.ok) for c in checks] == [("unit", False)]
    # (not "emptied by a drop-in and not set again", which sent one looking for a missing line)
    assert checks[0].detail.startswith(
        f'ExecStart="{command} run /etc/edgeseg/front-door.yaml: unbalanced quotes'
    )


def test_doctor_service_fails_when_a_group_of_the_unit_does_not_exist(tmp_path: Path) -> None:
    _group_file(tmp_path, "root:x:0:\n")
    _install(tmp_path)
    assert "no group video" in _failed(service_checks("front-door", tmp_path), "groups")


@needs_analyze
def test_install_refuses_an_output_file_outside_the_units_state_directory_in_one_line(tmp_path: Path) -> None:
    """sinks.jsonl.path: /var/log/edgeseg/door.jsonl (or a relative one, from the service's working
    directory /) was installed as it was: under ProtectSystem=strict the sink could not create it and the
    service ended at its start, status 2, never restarted, while doctor --service passed."""
    _group_file(tmp_path)
    pipeline = tmp_path / "out.yaml"
    state = "/var/lib/edgeseg/front-door"
    for path in ("/var/log/edgeseg/door.jsonl", "door.jsonl"):
        pipeline.write_text(_demo().replace("  jsonl:\n    path: null", f"  jsonl:\n    path: {path}"))
        with pytest.raises(ConfigError) as err:
            _install(tmp_path, pipeline=pipeline)
        assert str(err.value) == (
            f"{pipeline}: sinks.jsonl.path is {Path('/') / path}, which the service cannot write (it writes "
            f"only its state directory {state}): point it there, or remove the key (the service then writes "
            "none)"
        )
    assert not (tmp_path / "etc/edgeseg").exists()
    video = f"sinks:\n  video:\n    path: {state}/door.mp4\n  display:"
    pipeline.write_text(_demo().replace("sinks:\n  display:", video))
    _install(tmp_path, pipeline=pipeline)
    _verifies(tmp_path)
    assert _failed(service_checks("front-door", tmp_path), "outputs") == ""
    # the copy in /etc edited afterwards (install refuses it): doctor says so
    etc = tmp_path / "etc/edgeseg/front-door.yaml"
    etc.write_text(etc.read_text().replace(f"{state}/door.mp4", "/srv/door.mp4"))
    assert _failed(service_checks("front-door", tmp_path), "outputs") == (
        f"sinks.video.path is /srv/door.mp4: the service may only write {state}"
    )


def test_doctor_service_fails_when_the_pipeline_names_its_own_state_dir(tmp_path: Path) -> None:
    _group_file(tmp_path)
    _install(tmp_path)
    etc = tmp_path / "etc/edgeseg/front-door.yaml"  # (install refuses it: edited by hand afterwards)
    etc.write_text(etc.read_text().replace("queue_size: 2", f"queue_size: 2\n  state_dir: {tmp_path}"))
    assert "pipeline.state_dir" in _failed(service_checks("front-door", tmp_path), "state directory")


@needs_analyze
def test_install_refuses_a_state_dir_outside_the_units_state_directory_in_one_line(tmp_path: Path) -> None:
    """pipeline.state_dir: /srv/edgeseg was installed as it was, with no ReadWritePaths= (nor a UID that
    could own it): under ProtectSystem=strict the spool and saved tuning could not be written there."""
    _group_file(tmp_path)
    pipeline = tmp_path / "state.yaml"
    state = "/var/lib/edgeseg/front-door"
    pipeline.write_text(_demo().replace("queue_size: 2", "queue_size: 2\n  state_dir: /srv/edgeseg"))
    done = _install_cli(tmp_path, pipeline)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"edgeseg: error: {pipeline}: pipeline.state_dir is /srv/edgeseg, which the service cannot write (it "
        f"writes only its state directory {state}): point it there, or remove the key (the service then uses "
        f"{state})"
    ]
    assert not (tmp_path / "etc/edgeseg").exists()
    pipeline.write_text(_demo().replace("queue_size: 2", f"queue_size: 2\n  state_dir: {state}"))
    _install(tmp_path, pipeline=pipeline)
    _verifies(tmp_path)
    unit = (tmp_path / "etc/systemd/system/edgeseg@.service").read_text()
    assert "StateDirectory=edgeseg/%i" in unit.splitlines()
    assert _failed(service_checks("front-door", tmp_path), "state directory") == ""


def _camera_install(root: Path) -> Path:
    _group_file(root)
    pipeline = root / "cam.yaml"
    pipeline.write_text(_demo().replace("synthetic:parts?fps=30", "v4l2:0"))
    _install(root, pipeline=pipeline)
    (root / "dev").mkdir()
    return root / "dev" / "video0"


def _mem_camera_install(root: Path) -> Path:
    """:func:`_camera_install` with the camera a node of the kernel's "mem" group, rw for all; the path of a
    drop-in (not written yet) to allow devices in."""
    node = _camera_install(root)
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(node, 0o666)
    return _dropin(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_doctor_service_fails_when_the_camera_node_is_not_rw_for_the_units_groups(tmp_path: Path) -> None:
    node = _camera_install(tmp_path)
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(81, 0))
    os.chown(node, 0, 0)
    assert "is not rw for the groups" in _failed(service_checks("front-door", tmp_path), "camera device")
    os.chown(node, 0, 44)
    os.chmod(node, 0o660)
    assert _failed(service_checks("front-door", tmp_path), "camera device") == ""


@needs_analyze
@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_doctor_service_takes_a_device_allow_without_access_letters_for_rwm(tmp_path: Path) -> None:
    """`DeviceAllow=char-mem` in a drop-in (as README says to add a device) gives rwm, as systemd reads it:
    doctor took it for no write access and said the camera was refused."""
    override = _mem_camera_install(tmp_path)
    override.write_text("[Service]\nDeviceAllow=char-mem\n")
    _verifies(tmp_path)
    assert _failed(service_checks("front-door", tmp_path), "camera device") == ""
    override.write_text("[Service]\nDeviceAllow=char-mem r\n")
    assert "is not in DeviceAllow=" in _failed(service_checks("front-door", tmp_path), "camera device")


@needs_analyze
@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_doctor_service_takes_a_device_allow_path_under_root_and_an_auto_policy_without_one_as_open(
    tmp_path: Path,
) -> None:
    """Under --root, `DeviceAllow=/dev/video0 rw` never matched the node, looked for as ROOT/dev/video0;
    and `DevicePolicy=auto` (systemd's default) with no DeviceAllow= was taken for a closed policy, though
    it restricts no device: doctor said the camera was refused both times."""
    override = _mem_camera_install(tmp_path)
    override.write_text("[Service]\nDeviceAllow=\nDeviceAllow=/dev/video0 rw\n")
    _verifies(tmp_path)
    assert _failed(service_checks("front-door", tmp_path), "camera device") == ""
    override.write_text("[Service]\nDeviceAllow=\nDeviceAllow=/dev/null rw\n")
    assert "is not in DeviceAllow=" in _failed(service_checks("front-door", tmp_path), "camera device")
    override.write_text("[Service]\nDevicePolicy=auto\nDeviceAllow=\n")
    done = subprocess.run(
        [ANALYZE or "systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager",
         "edgeseg@front-door.service"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert re.search(r"✗ DeviceAllow=\s+Service has no device ACL", done.stdout), done.stdout
    assert _failed(service_checks("front-door", tmp_path), "camera device") == ""


def test_doctor_service_fails_when_the_camera_node_is_missing(tmp_path: Path) -> None:
    _camera_install(tmp_path)
    assert "does not exist" in _failed(service_checks("front-door", tmp_path), "camera device")


@pytest.mark.parametrize("name", ["edgeseg@front-door.service", "edgeseg@front-door", ""])
def test_doctor_service_of_the_units_name_or_an_empty_one_is_one_line_and_exit_status_2(
    tmp_path: Path, name: str
) -> None:
    """`doctor --service edgeseg@front-door` (the name systemctl takes) looked for /etc/edgeseg/edgeseg@front-
    door.yaml and said to install that name, which install refuses; an empty name checked nothing, exit 0."""
    _group_file(tmp_path)
    _install(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "doctor", "--service", name, "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    hint = "give the instance's name alone, 'front-door'" if name else "use letters"
    [line] = done.stderr.splitlines()
    assert line.startswith(f"edgeseg: error: service name {name!r}: {hint}")


def test_doctor_service_says_how_to_install_when_nothing_is_installed(tmp_path: Path) -> None:
    checks = service_checks("front-door", tmp_path)
    assert [(c.name, c.ok) for c in checks] == [("unit", False)]
    assert "edgeseg service install front-door" in checks[0].fix


def _under_mdwe(*cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    wrapper = REPO / "tests" / "mdwe.py"
    return subprocess.run(
        [sys.executable, str(wrapper), *cmd], cwd=cwd, capture_output=True, text=True, timeout=180
    )


def test_the_cpu_pipeline_runs_under_the_units_memory_deny_write_execute_filter(
    tmp_path: Path, broker: Broker
) -> None:
    """MemoryDenyWriteExecute=yes is kept on the CPU path: the demo model (ONNX Runtime, OpenCV), the JSONL
    sink and the MQTT sink with its SQLite spool run under systemd's own seccomp rules, loaded with
    libseccomp; a W+X mapping in the same wrapper is refused, so the filter is really on."""
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    refused = _under_mdwe(sys.executable, "-c", probe, cwd=tmp_path)
    assert refused.returncode == 1
    assert "Operation not permitted" in refused.stderr
    run = _under_mdwe(
        sys.executable, "-m", "edgeseg", "run", "--max-frames", "20", "--output", "out.jsonl",
        "--mqtt", broker.url, "--state-dir", str(tmp_path / "state"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("done: ")
    assert (tmp_path / "out.jsonl").read_text().count("\n") >= 1
    assert "acknowledged by the broker" in run.stdout


def _under_unit_filter(*cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``cmd`` under the installed unit's SystemCallFilter= (tests/syscall_filter.py)."""
    unit = REPO / "edgeseg" / "systemd" / "edgeseg@.service"
    wrapper = REPO / "tests" / "syscall_filter.py"
    return subprocess.run(
        [sys.executable, str(wrapper), str(unit), *cmd], cwd=cwd, capture_output=True, text=True, timeout=180
    )


@needs_analyze
def test_the_demo_pipeline_lowers_its_inference_priority_under_the_units_system_call_filter(
    tmp_path: Path,
) -> None:
    """pipeline.nice (5 by default) lowers inference's threads with setpriority, which the unit's
    SystemCallFilter=~@resources denied: every start warned and inference ran at the others' priority."""
    probe = "import os; os.sched_setaffinity(0, os.sched_getaffinity(0))"  # (@resources: denied, so it is on)
    refused = _under_unit_filter(sys.executable, "-c", probe, cwd=tmp_path)
    assert refused.returncode == 1
    assert "PermissionError" in refused.stderr
    run = _under_unit_filter(
        sys.executable, "-m", "edgeseg", "run", "--max-frames", "10", "--output", "out.jsonl",
        "--state-dir", str(tmp_path / "state"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "cannot lower" not in run.stderr


@needs_analyze
def test_reading_a_cardless_models_metadata_logs_no_error_under_the_units_system_call_filter(
    tmp_path: Path,
) -> None:
    """The metadata of a model without a card (a YOLO export) was read by a session with onnxruntime's
    default thread pool, which pins its threads: sched_setaffinity, denied by the unit, so every start put
    an error line in the journal ('pthread_setaffinity_np failed ... Operation not permitted')."""
    model = REPO.parent / "shared" / "assets" / "models" / "yolov8n-seg_int8_320.onnx"
    probe = (
        "from pathlib import Path; from edgeseg.modelcard import read_onnx_metadata; "
        f"print(read_onnx_metadata(Path({str(model)!r}))[1])"
    )
    done = _under_unit_filter(sys.executable, "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['images']"
    assert done.stderr == ""


def test_doctor_with_a_pipeline_fails_when_its_camera_is_missing(tmp_path: Path) -> None:
    # README: `edgeseg doctor PIPELINE` exits 1 when one of the pipeline's needs is missing; a USB camera
    # pipeline needs its camera (`edgeseg run` stops at once with "no camera /dev/video7")
    from edgeseg.doctor import pipeline_checks

    pipeline, dev = tmp_path / "cam.yaml", tmp_path / "dev"
    pipeline.write_text(_demo().replace("synthetic:parts?fps=30", "v4l2:7"))
    if not Path("/dev/video7").exists():
        assert [c.ok for c in pipeline_checks(str(pipeline)) if c.name == "camera"] == [False]
    dev.mkdir()
    camera = [c for c in pipeline_checks(str(pipeline), dev) if c.name == "camera"]
    assert [c.ok for c in camera] == [False]
    assert "video7" in camera[0].detail
    (dev / "video7").touch()
    assert [c.ok for c in pipeline_checks(str(pipeline), dev) if c.name == "camera"] == [True]
    assert not [c for c in pipeline_checks(str(DEMO), dev) if c.name == "camera"]  # synthetic: no device


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("1min 30s", 90.0), ("90", 90.0), ("1d", 86400.0), ("2 weeks", 1209600.0),
     ("1M", 2629800.0), ("1y 1h", 31561200.0), ("500ms", 0.5), ("infinity", float("inf"))],
)  # fmt: skip
def test_doctor_reads_every_systemd_time_span_unit_including_days_and_infinity(
    text: str, seconds: float
) -> None:
    # systemd.time(7): WatchdogSec=1d was a KeyError traceback out of `edgeseg doctor --service`
    assert timespan_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1 fortnight", "s", "1.2.3s", "-5s"])
def test_doctor_refuses_a_time_span_systemd_would_not_read(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        timespan_s(text)


def test_doctor_service_says_watchdogsec_infinity_arms_no_watchdog(tmp_path: Path) -> None:
    _group_file(tmp_path)
    _install(tmp_path)
    dropin = tmp_path / "etc/systemd/system/edgeseg@front-door.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "watchdog.conf").write_text("[Service]\nWatchdogSec=infinity\n")
    assert _failed(service_checks("front-door", tmp_path), "watchdog").startswith("WatchdogSec=infinity:")
