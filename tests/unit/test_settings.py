"""Settings: every FACEXPLAIN_* variable read in one place, defaults, malformed values, limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from explainer_service import settings as settings_mod
from explainer_service.errors import InputError, LimitExceededError
from explainer_service.settings import (
    DEFAULT_BIND_HOST,
    DEFAULT_MODEL_NAME,
    DEFAULT_REDIS_URL,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_STARTUP_TIMEOUT_S,
    Limits,
    Settings,
    get_settings,
)

CHECKOUT = Path(settings_mod.__file__).resolve().parents[1]
LIMIT_VARS = {f.name: "FACEXPLAIN_" + f.name.upper() for f in dataclasses.fields(Limits)}


def test_defaults_from_an_empty_environment():
    s = Settings.from_env({})
    assert s.home == Path.home() / ".cache" / "facexplain"
    assert s.chip_cache_dir == s.home / "chips"
    assert s.runtime_dir == s.home / "run"
    # this checkout has model_repository/README.md, so the checkout's repository is the default
    assert s.model_repository == CHECKOUT / "model_repository"
    assert s.triton_env == CHECKOUT / ".venv-triton"
    assert s.triton_url is None
    assert s.redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert s.default_model == DEFAULT_MODEL_NAME == "dlib-resnet-v1"
    assert s.bind_host == DEFAULT_BIND_HOST == "127.0.0.1"
    assert s.request_timeout_s == DEFAULT_REQUEST_TIMEOUT_S == 30.0
    assert s.startup_timeout_s == DEFAULT_STARTUP_TIMEOUT_S
    assert s.limits == Limits()


def test_xdg_cache_home_moves_the_default_home(tmp_path):
    s = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert s.home == tmp_path / "facexplain"
    assert s.chip_cache_dir == tmp_path / "facexplain" / "chips"


def test_each_variable_is_honoured(tmp_path):
    env = {
        "FACEXPLAIN_HOME": str(tmp_path / "home"),
        "FACEXPLAIN_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "FACEXPLAIN_TRITON_ENV": str(tmp_path / "tenv"),
        "FACEXPLAIN_TRITON_URL": "triton.example:9001",
        "FACEXPLAIN_REDIS_URL": "redis://cache:6380/2",
        "FACEXPLAIN_MODEL": "arcface_r50",
        "FACEXPLAIN_BIND_HOST": "0.0.0.0",
        "FACEXPLAIN_REQUEST_TIMEOUT": "2.5",
        "FACEXPLAIN_STARTUP_TIMEOUT": "7",
        "FACEXPLAIN_MAX_MASKS": "11",
        "FACEXPLAIN_MAX_PIXELS": "12",
        "FACEXPLAIN_MAX_IMAGE_BYTES": "13",
        "FACEXPLAIN_MAX_BATCH": "14",
        "FACEXPLAIN_MAX_PATCHES": "15",
    }
    s = Settings.from_env(env)
    assert s.home == tmp_path / "home"
    assert s.chip_cache_dir == tmp_path / "home" / "chips"
    assert s.model_repository == tmp_path / "repo"
    assert s.triton_env == tmp_path / "tenv"
    assert s.triton_url == "triton.example:9001"
    assert s.redis_url == "redis://cache:6380/2"
    assert s.default_model == "arcface_r50"
    assert s.bind_host == "0.0.0.0"
    assert s.request_timeout_s == 2.5
    assert s.startup_timeout_s == 7.0
    assert s.limits == Limits(max_masks=11, max_pixels=12, max_image_bytes=13, max_batch=14, max_patches=15)


def test_every_limit_has_its_variable():
    for name, var in LIMIT_VARS.items():
        s = Settings.from_env({var: "3"})
        assert getattr(s.limits, name) == 3
        others = {n: getattr(s.limits, n) for n in LIMIT_VARS if n != name}
        assert others == {n: getattr(Limits(), n) for n in others}


def test_home_without_a_repository_variable_keeps_the_checkouts_repository(tmp_path):
    s = Settings.from_env({"FACEXPLAIN_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.model_repository == CHECKOUT / "model_repository"


def test_a_tilde_is_expanded():
    s = Settings.from_env({"FACEXPLAIN_HOME": "~/fx", "FACEXPLAIN_MODEL_REPOSITORY": "~/repo"})
    assert s.home == Path.home() / "fx"
    assert s.model_repository == Path.home() / "repo"


def test_empty_values_mean_unset():
    s = Settings.from_env({"FACEXPLAIN_TRITON_URL": "", "FACEXPLAIN_MODEL": "", "FACEXPLAIN_MAX_MASKS": ""})
    assert s.triton_url is None
    assert s.default_model == DEFAULT_MODEL_NAME
    assert s.limits.max_masks == Limits().max_masks


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FACEXPLAIN_REQUEST_TIMEOUT", "soon"),
        ("FACEXPLAIN_REQUEST_TIMEOUT", "0"),
        ("FACEXPLAIN_REQUEST_TIMEOUT", "-5"),
        ("FACEXPLAIN_REQUEST_TIMEOUT", "nan"),
        ("FACEXPLAIN_REQUEST_TIMEOUT", "inf"),
        ("FACEXPLAIN_STARTUP_TIMEOUT", "3 min"),
        ("FACEXPLAIN_MAX_MASKS", "1e9"),
        ("FACEXPLAIN_MAX_MASKS", "2.5"),
        ("FACEXPLAIN_MAX_MASKS", "lots"),
        ("FACEXPLAIN_MAX_MASKS", "0"),
        ("FACEXPLAIN_MAX_PIXELS", "-1"),
        ("FACEXPLAIN_MAX_IMAGE_BYTES", "64MB"),
        ("FACEXPLAIN_MAX_BATCH", "0x10"),
        ("FACEXPLAIN_MAX_PATCHES", " "),
    ],
)
def test_a_malformed_number_names_its_variable(var, value):
    with pytest.raises(InputError, match=var) as info:
        Settings.from_env({var: value})
    assert "\n" not in str(info.value)


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.home = Path("/")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.limits.max_masks = 1  # type: ignore[misc]


def test_get_settings_reads_the_current_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEXPLAIN_HOME", str(tmp_path / "a"))
    assert get_settings().home == tmp_path / "a"
    monkeypatch.setenv("FACEXPLAIN_HOME", str(tmp_path / "b"))
    assert get_settings().home == tmp_path / "b"
    monkeypatch.setenv("FACEXPLAIN_MAX_BATCH", "zero")
    with pytest.raises(InputError, match="FACEXPLAIN_MAX_BATCH"):
        get_settings()


def test_limits_check_passes_at_and_under_the_limit():
    limits = Limits(max_masks=100)
    limits.check("max_masks", 100)
    limits.check("max_masks", 1)
    limits.check("max_masks", 0)


@pytest.mark.parametrize("name", sorted(LIMIT_VARS))
def test_limits_check_names_the_limit_and_its_variable(name):
    limits = Limits(**{name: 10})
    with pytest.raises(LimitExceededError, match=LIMIT_VARS[name]) as info:
        limits.check(name, 11)
    message = str(info.value)
    assert "11" in message and "10" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", [10**30, 1e300, float("inf"), float("nan")])
def test_limits_check_refuses_huge_and_non_finite_values(value):
    with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_MASKS"):
        Limits().check("max_masks", value)


def test_a_limit_error_is_an_input_error_with_exit_2():
    from explainer_service.errors import exit_code, grpc_status

    with pytest.raises(InputError) as info:
        Limits(max_batch=1).check("max_batch", 2)
    assert exit_code(info.value) == 2
    assert grpc_status(info.value) == "RESOURCE_EXHAUSTED"


def test_the_module_reads_no_variable_outside_from_env():
    """FACEXPLAIN_* are read in one place: no other module of the package calls os.environ/getenv
    with a FACEXPLAIN_ name."""
    import re

    pkg = CHECKOUT / "explainer_service"
    pattern = re.compile(r"""(environ(\.get)?|getenv)\s*[\[(]\s*["']FACEXPLAIN_""")
    offenders = [
        str(p.relative_to(pkg))
        for p in pkg.rglob("*.py")
        if p.name != "settings.py" and pattern.search(p.read_text())
    ]
    assert offenders == [], offenders


def test_a_client_reaches_the_configured_server_and_ca(tmp_path):
    from explainer_service.settings import Settings

    plain = Settings.from_env({})
    assert plain.client_server == f"127.0.0.1:{plain.api_port}" and plain.tls_ca is None
    s = Settings.from_env({"FACEXPLAIN_SERVER": " api.example:7000 ", "FACEXPLAIN_TLS_CA": str(tmp_path / "ca.pem"),
                           "FACEXPLAIN_DASHBOARD_APP": str(tmp_path / "app.py")})
    assert s.client_server == "api.example:7000"
    assert s.tls_ca == tmp_path / "ca.pem" and s.dashboard_app == tmp_path / "app.py"
    assert Settings.from_env({"FACEXPLAIN_API_PORT": "6000"}).client_server == "127.0.0.1:6000"
