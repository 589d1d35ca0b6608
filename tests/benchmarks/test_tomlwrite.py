"""Config tables written as TOML read back the same, and replay with `fairbatch simulate`."""

import math
import tomllib

import pytest

from bench_helpers import tiny_table
from benchmarks.tomlwrite import dumps
from sim.config import config_from_dict, config_to_dict, load_config


def test_round_trip_through_tomllib():
    table = {"seed": 1, "name": 'say "hi"\n', "x": 0.1, "big": math.inf, "on": True, "xs": [1, 2.5],
             "skip": None, "cluster": {"workers": 2, "params": {"a b": 1}},
             "tenants": [{"name": "a", "slo": {"ttft_ms": 5, "tpot_ms": None}}, {"name": "b"}]}
    back = tomllib.loads(dumps(table))
    expected = {k: v for k, v in table.items() if k != "skip"}
    expected["tenants"] = [{"name": "a", "slo": {"ttft_ms": 5}}, {"name": "b"}]
    assert back == expected


def test_a_written_config_loads_to_the_same_config(tmp_path):
    table = tiny_table(scheduler={"policy": "drr", "policy_params": {"quantum": 512}})
    path = tmp_path / "run.toml"
    path.write_text(dumps(table))
    assert config_to_dict(load_config(path)) == config_to_dict(config_from_dict(table))


def test_values_toml_cannot_hold_are_refused():
    with pytest.raises(TypeError, match="cannot write object as TOML"):
        dumps({"x": object()})
