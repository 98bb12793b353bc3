"""Configuration from the environment: Heroku's URLs, the production SECRET_KEY rule, the local key."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from levqor_core import config

ROOT = Path(__file__).resolve().parent.parent
PRINT_SECRET = "from levqor_core import config; print(config.from_env()['SECRET_KEY'])"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@db.example:5432/d1", "postgresql+psycopg://u:p@db.example:5432/d1"),
        ("postgresql://u:p@127.0.0.1/d2", "postgresql+psycopg://u:p@127.0.0.1/d2"),
        ("postgresql+psycopg://u@h/d3", "postgresql+psycopg://u@h/d3"),
    ],
)
def test_heroku_and_plain_postgres_urls_use_psycopg3(raw, expected):
    assert config.database_url(raw) == expected


def _environment(var_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DYNO")}
    return env | {"LEVQOR_VAR_DIR": str(var_dir)} | extra


def test_a_dyno_without_secret_key_refuses_to_start(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", PRINT_SECRET],
        env=_environment(tmp_path, DYNO="web.1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "SECRET_KEY must be set" in proc.stderr
    assert not (tmp_path / "secret_key").exists()


def test_processes_starting_together_share_one_private_local_key(tmp_path):
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", PRINT_SECRET],
            env=_environment(tmp_path),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    keys = {proc.communicate()[0].strip() for proc in starts}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("secret_key")) == ["secret_key"]

    restarted = subprocess.run(
        [sys.executable, "-c", PRINT_SECRET], env=_environment(tmp_path), cwd=ROOT, capture_output=True, text=True
    )
    assert restarted.stdout.strip() == (tmp_path / "secret_key").read_text().strip()


def test_secret_key_from_the_environment_wins_and_writes_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", PRINT_SECRET],
        env=_environment(tmp_path, SECRET_KEY="from-env", DYNO="web.1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "from-env"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("extra", "secure"),
    [({}, False), ({"DYNO": "web.1"}, True), ({"DYNO": "web.1", "SESSION_COOKIE_SECURE": "0"}, False)],
)
def test_session_cookies_are_secure_on_a_dyno_unless_turned_off(tmp_path, extra, secure):
    code = (
        "from levqor_core import config; c = config.from_env();"
        "print(c['SESSION_COOKIE_SECURE'], c['REMEMBER_COOKIE_SECURE'])"
    )
    env = _environment(tmp_path, SECRET_KEY="s", **extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == [str(secure)] * 2, out.stderr


def test_app_json_builds_the_assets_first_and_runs_only_procfile_processes():
    manifest = json.loads((ROOT / "app.json").read_text())
    assert [b["url"] for b in manifest["buildpacks"]] == ["heroku/nodejs", "heroku/python"]
    assert set(manifest["formation"]) <= {line.split(":")[0] for line in (ROOT / "Procfile").read_text().splitlines()}


def _sample(setting: dict) -> str:
    """A value for an app.json setting that differs from any default: one more than its number, else text."""
    value = setting.get("value", "")
    return str(int(value) + 1) if value.isdigit() else "https://sample.example/setting"


@pytest.mark.parametrize("name", sorted(json.loads((ROOT / "app.json").read_text())["env"]))
def test_every_setting_app_json_names_changes_the_configuration(name, tmp_path, monkeypatch):
    setting = json.loads((ROOT / "app.json").read_text())["env"][name]
    monkeypatch.setattr(config, "VAR_DIR", tmp_path)  # an unset SECRET_KEY writes its local key here
    monkeypatch.delenv("DYNO", raising=False)
    monkeypatch.delenv(name, raising=False)
    unset = config.from_env()
    monkeypatch.setenv(name, _sample(setting))
    changed = {key for key, value in config.from_env().items() if unset[key] != value}
    assert changed, f"{name} is set on Heroku by app.json but changes nothing the app reads"


def test_secret_key_fallbacks_and_retired_keys_are_comma_separated_lists(tmp_path):
    show = (
        "from levqor_core import config; c = config.from_env(); "
        "print(c['SECRET_KEY_FALLBACKS'], c['RETIRED_SECRET_KEYS'])"
    )
    printed = subprocess.run(
        [sys.executable, "-c", show],
        env=_environment(
            tmp_path, SECRET_KEY="now", SECRET_KEY_FALLBACKS=" before , long-ago,,", RETIRED_SECRET_KEYS="x"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout.strip() == "['before', 'long-ago'] ['x']"
