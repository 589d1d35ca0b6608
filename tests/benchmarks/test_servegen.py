"""The ServeGen mix: relative rates, burstiness and lengths of real clients, as tenants."""

import gzip

import pytest

from benchmarks.servegen import BULK_SLO, INTERACTIVE_SLO, main, mix_table, read_clients
from scheduler.errors import ConfigError
from sim.config import config_from_dict

pytest_plugins = ["bench_fixtures"]  # the tiny_scenario and shared_data fixtures

WINDOWS = [  # category, model, client, window start, rate, cv
    ("language", "m-x", "1", 0, 6.0, 2.0), ("language", "m-x", "1", 600, 2.0, 4.0),
    ("language", "m-x", "1", 1200, 0.0, 0.0),
    ("language", "m-x", "2", 0, 1.0, 1.0), ("language", "m-x", "2", 600, 1.0, 1.5),
    ("language", "m-x", "2", 1200, 1.0, 100.0),
    ("language", "m-x", "3", 0, 0.5, 1.0), ("language", "m-x", "3", 600, 0.0, 0.0),
    ("language", "m-x", "3", 1200, 0.1, 1.0),
    ("language", "m-x", "4", 0, 0.0, 0.0),
    ("language", "m-y", "1", 0, 50.0, 1.0),
]
LENGTHS = [  # client, window, field, mean, p99
    ("1", 0, "input_tokens", 100.0, 400.0), ("1", 21600, "input_tokens", 300.0, 800.0),
    ("1", 0, "output_tokens", 50.0, 5000.0),
    ("3", 0, "input_tokens", 1000.0, 2000.0), ("3", 0, "output_tokens", 10.0, 10.0),
]


def write_data(folder):
    with gzip.open(folder / "servegen_client_windows.csv.gz", "wt") as f:
        f.write("category,model,client_id,window_start_s,rate,cv,arrival_dist,dist_shape,dist_scale\n")
        f.writelines(f"{c},{m},{i},{w},{r},{cv},Gamma,1,1\n" for c, m, i, w, r, cv in WINDOWS)
    with gzip.open(folder / "servegen_client_length_summary.csv.gz", "wt") as f:
        f.write("category,model,client_id,window_start_s,field,n_support,mean,p50,p90,p99,max,prob_sum\n")
        f.writelines(f"language,m-x,{i},{w},{field},9,{mean},1,1,{p99},1,1.0\n" for i, w, field, mean, p99 in LENGTHS)
    return folder


def test_clients_get_mean_rates_median_cvs_and_their_lengths(tmp_path):
    clients = read_clients(write_data(tmp_path), "m-x")
    assert [c.id for c in clients] == ["1", "2", "3"]  # client 4 never sent anything
    one, two, three = clients
    assert one.rate == pytest.approx(8 / 3) and one.cv == 3.0  # median of the active windows' CVs
    assert two.cv == 1.5 and two.prompt is None  # no length data
    assert three.rate == pytest.approx(0.2)
    assert one.prompt == (200.0, pytest.approx(760.0)) and one.output == (50.0, 5000.0)


def test_the_mix_keeps_relative_rates_pools_the_rest_and_makes_the_heaviest_bulk(tmp_path):
    clients = read_clients(write_data(tmp_path), "m-x")
    table = mix_table(clients, tenants=2, rate=10.0, bulk=1, workers=1, duration_s=30)
    tenants = table["tenants"]
    assert [t["name"] for t in tenants] == ["client-1", "client-2", "others"]
    total = sum(c.rate for c in clients)
    assert [t["rate"] for t in tenants] == [pytest.approx(10 * c.rate / total, abs=1e-4) for c in clients]
    assert [t["priority"] for t in tenants] == [1, 0, 0] and tenants[0]["slo"] == BULK_SLO
    assert tenants[1]["slo"] == INTERACTIVE_SLO and tenants[1]["cv"] == 1.5 and tenants[2]["arrival"] == "poisson"
    assert tenants[0]["output_tokens"] == {"dist": "lognormal", "mean": 50.0, "p99": 700.0}  # p99 capped
    assert tenants[1]["prompt_tokens"]["mean"] == pytest.approx((200 * 8 / 3 + 1000 * 0.2) / (8 / 3 + 0.2), abs=0.1)
    assert tenants[2]["output_tokens"] == {"dist": "lognormal", "mean": 10.0, "p99": 10.5}  # p99 > mean
    assert table["horizon_s"] == 90 and config_from_dict(table).cluster.workers == 1


def test_missing_files_and_unknown_models_are_named(tmp_path):
    with pytest.raises(ConfigError, match="servegen_client_windows.csv.gz: ServeGen file not found"):
        read_clients(tmp_path)
    with pytest.raises(ConfigError, match="--model: no client of model 'm-z'"):
        read_clients(write_data(tmp_path), "m-z")


def test_main_prints_a_scenario_toml(tmp_path, capsys):
    assert main([str(write_data(tmp_path)), "--model", "m-x", "--tenants", "1", "--rate", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed = 0\n") and '[[tenants]]\nname = "client-1"' in out and 'name = "others"' in out
    assert main([str(tmp_path / "none")]) == 2


@pytest.mark.slow
def test_the_real_m_large_mix_is_a_valid_scenario(shared_data):
    clients = read_clients(shared_data)
    assert len(clients) > 100 and clients[0].rate > clients[-1].rate
    config = config_from_dict(mix_table(clients))
    assert len(config.tenants) == 8 and sum(t.rate for t in config.tenants) == pytest.approx(20.0, abs=1e-3)
