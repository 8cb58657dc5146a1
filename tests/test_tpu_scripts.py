"""tpu/ scripts: syntax, dry runs that print the gcloud commands (nothing here can reach Google
Cloud), overridable settings, and the retry helper."""

import os
import pathlib
import shlex
import subprocess

import pytest

TPU = pathlib.Path(__file__).resolve().parents[1] / "tpu"
SCRIPTS = ("create.sh", "setup.sh", "run.sh")


@pytest.fixture
def no_gcloud(tmp_path):
    """A PATH whose ``gcloud`` only records that it was called: a dry run must never call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud-called"
    fake = bin_dir / "gcloud"
    fake.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\nexit 1\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, marker


def _dry_run(script: str, env: dict[str, str]) -> list[list[str]]:
    result = subprocess.run(["bash", str(TPU / script)], env=os.environ | env | {"DRY_RUN": "1"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    commands = []  # "+ cmd" lines; a quoted multi-line argument continues on the next lines
    for line in result.stdout.splitlines():
        if line.startswith("+ "):
            commands.append(line[2:])
        elif commands:
            commands[-1] += "\n" + line
    assert commands, result.stdout
    return [shlex.split(command) for command in commands]


@pytest.mark.parametrize("script", [*SCRIPTS, "common.sh"])
def test_scripts_parse_and_are_strict(script):
    path = TPU / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    if script != "common.sh":
        assert "set -euo pipefail" in path.read_text()
        assert os.access(path, os.X_OK)


def test_create_dry_run_requests_a_queued_resource(no_gcloud):
    env, marker = no_gcloud
    commands = _dry_run("create.sh", env | {"TPU_NAME": "pod", "ZONE": "europe-west4-a",
                                            "ACCELERATOR_TYPE": "v5litepod-16", "PROJECT": "proj",
                                            "SPOT": "1"})
    create = commands[0]
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod-qr"]
    for flag in ("--zone=europe-west4-a", "--project=proj", "--node-id=pod",
                 "--accelerator-type=v5litepod-16", "--runtime-version=tpu-ubuntu2204-base", "--spot"):
        assert flag in create
    assert commands[1][4] == "describe"
    assert not marker.exists()


def test_setup_dry_run_copies_and_installs_on_all_workers(no_gcloud):
    env, marker = no_gcloud
    commands = _dry_run("setup.sh", env | {"TPU_NAME": "pod", "ZONE": "us-east5-a"})
    archive, scp, ssh = commands
    assert archive[:2] == ["git", "-C"] and "archive" in archive
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert "--worker=all" in scp and "pod:bleedjax.tar.gz" in scp
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert "--worker=all" in ssh and "--zone=us-east5-a" in ssh
    remote = next(arg for arg in ssh if arg.startswith("--command="))
    assert "test -x ~/bleedjax-venv/bin/python || python3 -m venv" in remote  # idempotent venv
    assert "'jax[tpu]'" in remote
    assert not marker.exists()


def test_run_dry_run_trains_on_every_worker_with_a_gs_workdir(no_gcloud):
    env, marker = no_gcloud
    commands = _dry_run("run.sh", env | {"BUCKET": "gs://my-bucket", "RUN_NAME": "v4-32",
                                         "CONFIG": "configs/tunet.py:bundled",
                                         "TRAIN_ARGS": "--set data.data_dir=gs://my-bucket/tfds"})
    (ssh,) = commands
    assert "--worker=all" in ssh
    remote = next(arg for arg in ssh if arg.startswith("--command="))
    assert "export BLEEDJAX_DISTRIBUTED=1" in remote
    assert ("bleedjax train --config configs/tunet.py:bundled --workdir gs://my-bucket/runs/v4-32 "
            "--set data.data_dir=gs://my-bucket/tfds") in remote
    assert not marker.exists()


def test_run_refuses_a_local_workdir():
    result = subprocess.run(["bash", str(TPU / "run.sh")],
                            env=os.environ | {"DRY_RUN": "1", "WORKDIR": "/tmp/run"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "gs://" in result.stderr


def test_retry_gives_up_after_retries_and_succeeds_when_a_later_attempt_does(tmp_path):
    counter = tmp_path / "attempts"
    flaky = f"echo x >> {shlex.quote(str(counter))}; test $(wc -l < {shlex.quote(str(counter))}) -ge 3"
    script = (f"source {shlex.quote(str(TPU / 'common.sh'))}; retry false; echo failed=$?; "
              f"retry bash -c {shlex.quote(flaky)}; echo flaky=$?")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False,
                            env=os.environ | {"RETRIES": "4", "RETRY_SLEEP": "0"})
    assert "failed=1" in result.stdout and "giving up after 4 attempts" in result.stderr
    assert "flaky=0" in result.stdout
    assert counter.read_text().count("x") == 3


@pytest.mark.parametrize("script", ["create.sh", "setup.sh", "run.sh"])
def test_help_prints_the_header_and_other_arguments_are_refused(script, tmp_path):
    """Settings come from the environment; an argument must not start anything (a fake gcloud on
    PATH records any call)."""
    marker = tmp_path / "called"
    (tmp_path / "gcloud").write_text(f"#!/bin/sh\necho called >> {shlex.quote(str(marker))}\n")
    (tmp_path / "gcloud").chmod(0o755)
    env = os.environ | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    shown = subprocess.run(["bash", str(TPU / script), "--help"], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert shown.returncode == 0 and "Settings (environment)" in shown.stdout
    refused = subprocess.run(["bash", str(TPU / script), "now"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 2 and "takes no arguments" in refused.stderr
    assert not marker.exists()
