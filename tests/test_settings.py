"""Project settings: flag > environment > file > default, resolved once, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from motia_py.errors import ProjectError, SettingsError
from motia_py.settings import DEFAULT_BACKEND_URL, SETTINGS, load_settings, read_settings_file


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "motia_py.toml").write_text(text)
    return root


def test_defaults_apply_without_a_settings_file(tmp_path: Path) -> None:
    s = load_settings(tmp_path, env={})
    assert s.root == tmp_path.resolve()
    assert s.steps_dir == tmp_path.resolve() / "steps"
    assert s.flows_dir == tmp_path.resolve() / "flows"
    assert s.backend_url == DEFAULT_BACKEND_URL == "sqlite:///.motia/motia.db"
    assert (s.host, s.port) == ("127.0.0.1", 3000)
    assert s.redis_prefix == "motia"
    assert s.workbench_token is None
    assert s.grace_period_s == 30.0
    assert (s.log_format, s.log_level) == ("auto", "info")
    assert s.settings_file == tmp_path.resolve() / "motia_py.toml"


def test_empty_settings_file_gives_defaults(tmp_path: Path) -> None:
    write(tmp_path, "")
    assert load_settings(tmp_path, env={}) == load_settings(tmp_path, env={}, flags={})


def test_file_values_are_used(tmp_path: Path) -> None:
    write(tmp_path, """
[project]
steps_dir = "src/steps"
flows_dir = "src/flows"

[backend]
url = "redis://localhost:6379/0"
prefix = "app"

[server]
host = "0.0.0.0"
port = 8080
workbench_token = "secret"

[worker]
grace_period = 5

[logging]
format = "json"
level = "debug"
""")
    s = load_settings(tmp_path, env={})
    assert s.steps_dir == tmp_path.resolve() / "src" / "steps"
    assert s.flows_dir == tmp_path.resolve() / "src" / "flows"
    assert s.backend_url == "redis://localhost:6379/0"
    assert s.redis_prefix == "app"
    assert (s.host, s.port) == ("0.0.0.0", 8080)
    assert s.workbench_token == "secret"
    assert s.grace_period_s == 5.0
    assert (s.log_format, s.log_level) == ("json", "debug")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    write(tmp_path, '[backend]\nurl = "memory://"\n[server]\nport = 8080\n')
    s = load_settings(tmp_path, env={"MOTIA_PY_BACKEND_URL": "redis://r:6379/1", "MOTIA_PY_SERVER_PORT": "9090"})
    assert s.backend_url == "redis://r:6379/1"
    assert s.port == 9090


def test_flag_overrides_the_environment(tmp_path: Path) -> None:
    write(tmp_path, '[backend]\nurl = "memory://"\n')
    s = load_settings(
        tmp_path,
        flags={"backend_url": "sqlite:///flag.db", "port": 7000},
        env={"MOTIA_PY_BACKEND_URL": "redis://env:6379/0", "MOTIA_PY_SERVER_PORT": "9090"},
    )
    assert s.backend_url == "sqlite:///flag.db"
    assert s.port == 7000


def test_precedence_is_resolved_per_setting(tmp_path: Path) -> None:
    write(tmp_path, '[server]\nhost = "file-host"\nport = 1111\n[logging]\nlevel = "warning"\n')
    s = load_settings(tmp_path, flags={"port": 3333}, env={"MOTIA_PY_SERVER_HOST": "env-host"})
    assert s.host == "env-host"  # env over file
    assert s.port == 3333  # flag over file
    assert s.log_level == "warning"  # file over default
    assert s.log_format == "auto"  # default


def test_none_flags_and_empty_environment_values_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, '[backend]\nurl = "memory://"\n')
    s = load_settings(tmp_path, flags={"backend_url": None}, env={"MOTIA_PY_BACKEND_URL": ""})
    assert s.backend_url == "memory://"


def test_every_setting_has_an_environment_variable(tmp_path: Path) -> None:
    env = {
        "MOTIA_PY_STEPS_DIR": "s",
        "MOTIA_PY_FLOWS_DIR": "f",
        "MOTIA_PY_BACKEND_URL": "memory://",
        "MOTIA_PY_BACKEND_PREFIX": "p",
        "MOTIA_PY_MAX_PAYLOAD_BYTES": "10",
        "MOTIA_PY_SERVER_HOST": "h",
        "MOTIA_PY_SERVER_PORT": "1",
        "MOTIA_PY_SERVER_BODY_LIMIT": "20",
        "MOTIA_PY_WORKBENCH_TOKEN": "tok",
        "MOTIA_PY_SERVER_ALLOWED_HOSTS": "dev.example, Other.Local.",
        "MOTIA_PY_GRACE_PERIOD": "1.5",
        "MOTIA_PY_LOG_FORMAT": "text",
        "MOTIA_PY_LOG_LEVEL": "error",
        "MOTIA_PY_TRACES_ENABLED": "false",
        "MOTIA_PY_TRACES_MAX_AGE": "60",
        "MOTIA_PY_TRACES_MAX_COUNT": "7",
        "MOTIA_PY_TRACES_OTEL": "off",
        "MOTIA_PY_HANDLES_MAX_AGE": "30",
        "MOTIA_PY_HANDLES_MAX_COUNT": "9",
        "MOTIA_PY_DOTENV": "no",
        "MOTIA_PY_SERVER_METRICS": "yes",
        "MOTIA_PY_METRICS_TOKEN": "mtok",
        "MOTIA_PY_MOTIA_SDK": "Builtin",
        "MOTIA_PY_TRANSACTIONAL": "on",
        "MOTIA_PY_STREAMS_AUTHENTICATE": "auth:check",
        "MOTIA_PY_SERVER_MIDDLEWARE": "mw:one, mw:two",
        "MOTIA_PY_CORS_ORIGINS": "https://a.example,https://b.example",
        "MOTIA_PY_CORS_METHODS": "GET",
        "MOTIA_PY_CORS_HEADERS": "*",
        "MOTIA_PY_CORS_CREDENTIALS": "true",
        "MOTIA_PY_EVENT_LOOP": "AsyncIO",
    }
    assert {s.env for s in SETTINGS} == set(env)
    s = load_settings(tmp_path, env=env)
    assert s.steps_dir == tmp_path.resolve() / "s"
    assert s.flows_dir == tmp_path.resolve() / "f"
    assert (s.redis_prefix, s.max_payload_bytes, s.host, s.port) == ("p", 10, "h", 1)
    assert (s.body_limit_bytes, s.workbench_token, s.grace_period_s) == (20, "tok", 1.5)
    assert s.allowed_hosts == ("dev.example", "other.local")
    assert (s.log_format, s.log_level) == ("text", "error")
    assert (s.traces_enabled, s.traces_max_age_s, s.traces_max_count, s.traces_otel) == (False, 60.0, 7, "off")
    assert (s.dotenv, s.metrics, s.metrics_token) == (False, True, "mtok")
    assert (s.handles_max_age_s, s.handles_max_count) == (30.0, 9)
    assert s.motia_sdk == "builtin"
    assert s.transactional is True
    assert s.event_loop == "asyncio"
    assert s.streams_authenticate == "auth:check"
    assert s.middleware == ("mw:one", "mw:two")
    assert (s.cors_origins, s.cors_methods, s.cors_headers, s.cors_credentials) == (
        ("https://a.example", "https://b.example"), ("GET",), ("*",), True)


def test_event_loop_is_auto_uvloop_or_asyncio(tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).event_loop == "auto"
    write(tmp_path, '[worker]\nevent_loop = "uvloop"\n')
    assert load_settings(tmp_path, env={}).event_loop == "uvloop"
    with pytest.raises(SettingsError, match=r"event_loop.*auto, uvloop or asyncio"):
        load_settings(tmp_path, env={"MOTIA_PY_EVENT_LOOP": "trio"})


def test_motia_sdk_is_auto_builtin_or_installed(tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).motia_sdk == "auto"
    write(tmp_path, '[project]\nmotia_sdk = "installed"\n')
    assert load_settings(tmp_path, env={}).motia_sdk == "installed"
    with pytest.raises(SettingsError, match=r"motia_sdk.*auto, builtin or installed"):
        load_settings(tmp_path, env={"MOTIA_PY_MOTIA_SDK": "bundled"})


def test_relative_steps_dir_resolves_under_the_project_root_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(tmp_path / "proj", '[project]\nsteps_dir = "app/steps"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(root, env={"MOTIA_PY_FLOWS_DIR": "app/flows"})
    assert s.steps_dir == root.resolve() / "app" / "steps"
    assert s.flows_dir == root.resolve() / "app" / "flows"
    flagged = load_settings(root, flags={"steps_dir": "other"}, env={})
    assert flagged.steps_dir == root.resolve() / "other"


def test_absolute_steps_dir_is_kept(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    s = load_settings(tmp_path, flags={"steps_dir": str(outside)}, env={})
    assert s.steps_dir == outside.resolve()


def test_relative_project_path_resolves_against_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path)
    s = load_settings("proj", env={})
    assert s.root == (tmp_path / "proj").resolve()
    assert s.root.is_absolute()


def test_unknown_setting_key_is_a_project_error_with_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, "[server]\nprot = 3000\n")
    with pytest.raises(ProjectError) as info:
        load_settings(tmp_path, env={})
    assert not isinstance(info.value, SettingsError)
    message = str(info.value)
    assert "server.prot" in message
    assert "did you mean 'server.port'?" in message


def test_unknown_section_is_a_project_error_with_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, '[backnd]\nurl = "memory://"\n')
    with pytest.raises(ProjectError, match=r"did you mean 'backend\.url'\?"):
        load_settings(tmp_path, env={})


def test_top_level_value_instead_of_a_table_is_a_project_error(tmp_path: Path) -> None:
    write(tmp_path, 'steps_dir = "steps"\n')
    with pytest.raises(ProjectError, match="steps_dir"):
        load_settings(tmp_path, env={})


def test_unparsable_settings_file_is_a_project_error(tmp_path: Path) -> None:
    write(tmp_path, "[server\nport = \n")
    with pytest.raises(ProjectError, match="cannot parse"):
        load_settings(tmp_path, env={})
    with pytest.raises(ProjectError):
        read_settings_file(tmp_path)


def test_missing_settings_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_settings_file(tmp_path) == {}


def test_missing_project_directory_is_a_project_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="no such project directory"):
        load_settings(tmp_path / "nope", env={})


def test_project_path_that_is_a_file_is_a_project_error(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ProjectError):
        load_settings(f, env={})


def test_bad_port_in_the_file_names_the_file_key(tmp_path: Path) -> None:
    write(tmp_path, "[server]\nport = 70000\n")
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path, env={})
    assert "motia_py.toml [server] port" in str(info.value)
    assert "70000" in str(info.value)


def test_bad_port_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path, env={"MOTIA_PY_SERVER_PORT": "http"})
    assert "$MOTIA_PY_SERVER_PORT" in str(info.value)
    assert "'http'" in str(info.value)


def test_bad_port_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--port"):
        load_settings(tmp_path, flags={"port": -1}, env={})


def test_bad_value_in_the_environment_wins_over_a_good_file_value(tmp_path: Path) -> None:
    write(tmp_path, "[worker]\ngrace_period = 10\n")
    with pytest.raises(SettingsError, match=r"\$MOTIA_PY_GRACE_PERIOD"):
        load_settings(tmp_path, env={"MOTIA_PY_GRACE_PERIOD": "soon"})


def test_a_flag_replaces_a_bad_environment_value(tmp_path: Path) -> None:
    s = load_settings(tmp_path, flags={"port": 4000}, env={"MOTIA_PY_SERVER_PORT": "http"})
    assert s.port == 4000


def test_settings_error_is_a_project_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectError):
        load_settings(tmp_path, env={"MOTIA_PY_MAX_PAYLOAD_BYTES": "lots"})


def test_real_environment_is_read_when_env_is_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTIA_PY_SERVER_HOST", "from-os-environ")
    assert load_settings(tmp_path).host == "from-os-environ"
    assert load_settings(tmp_path, env={}).host == "127.0.0.1"


@pytest.mark.parametrize("value", ["3000.5", "true"])
def test_non_integer_port_in_the_file_is_rejected(tmp_path: Path, value: str) -> None:
    write(tmp_path, f"[server]\nport = {value}\n")
    with pytest.raises(SettingsError, match=r"motia_py\.toml \[server\] port"):
        load_settings(tmp_path, env={})


# -- hostile values are SettingsErrors naming the setting, never tracebacks (issue 13) ----------------------


@pytest.mark.parametrize(("text", "name"), [
    ("[server]\nbody_limit_bytes = inf\n", "body_limit_bytes"),
    ("[server]\nbody_limit_bytes = nan\n", "body_limit_bytes"),
    ("[server]\nbody_limit_bytes = 1e400\n", "body_limit_bytes"),
    ("[backend]\nmax_payload_bytes = 99999999999999999999\n", "max_payload_bytes"),
    ("[worker]\ngrace_period = inf\n", "grace_period_s"),
    ("[traces]\nmax_age = -1\n", "traces_max_age_s"),
    ('[project]\nsteps_dir = "st\\u0000eps"\n', "steps_dir"),
    ("[project]\nsteps_dir = 5\n", "steps_dir"),
    ('[server]\nhost = ["a"]\n', "host"),
    ('[server]\nallowed_hosts = "a b"\n', "allowed_hosts"),
])
def test_values_no_server_could_use_are_settings_errors(tmp_path: Path, text: str, name: str) -> None:
    write(tmp_path, text)
    with pytest.raises(SettingsError, match=f"invalid {name} from motia_py.toml"):
        load_settings(tmp_path, env={})


def test_a_nul_byte_in_steps_dir_from_the_environment_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\$MOTIA_PY_STEPS_DIR"):
        load_settings(tmp_path, env={"MOTIA_PY_STEPS_DIR": "a\x00b"})


def test_a_settings_file_that_is_a_folder_or_nested_too_deep_is_a_project_error(tmp_path: Path) -> None:
    (tmp_path / "a" / "motia_py.toml").mkdir(parents=True)
    with pytest.raises(ProjectError, match="cannot read"):
        load_settings(tmp_path / "a", env={})
    write(tmp_path / "b", "[server]\nport = " + "[" * 5_000 + "]" * 5_000 + "\n")
    with pytest.raises(ProjectError, match="cannot parse"):
        load_settings(tmp_path / "b", env={})


def test_allowed_hosts_is_a_list_of_lower_case_names(tmp_path: Path) -> None:
    write(tmp_path, '[server]\nallowed_hosts = ["Dev.Example.", "box.local"]\n')
    assert load_settings(tmp_path, env={}).allowed_hosts == ("dev.example", "box.local")
    assert load_settings(tmp_path, env={"MOTIA_PY_SERVER_ALLOWED_HOSTS": "a.test,b.test"}).allowed_hosts == (
        "a.test", "b.test")
