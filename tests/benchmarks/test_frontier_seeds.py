"""benchmarks/frontier_seeds.py: the mean and range over seeds of the
configurations every seed's rows hold, and nothing else."""
import json

from tests.benchmarks import load_script


def _rows(path, rows):
    with open(path, "w") as f:
        json.dump({"rows": [{"name": "dense", "sparsity": 0.0}] + [
            {"name": n, "sparsity": s, "test_accuracy": t, "validation_accuracy": v,
             "gradient_equivalents": g} for n, s, t, v, g in rows]}, f)
    return str(path)


def test_the_table_averages_the_configurations_every_seed_ran(tmp_path):
    seeds = load_script("frontier_seeds")
    a = _rows(tmp_path / "a.json", [("distill", 0.9, 0.97, 0.96, 100.0),
                                    ("geodesic", 0.9, 0.95, 0.94, 300.0),
                                    ("only_here", 0.9, 0.5, 0.5, 1.0)])
    b = _rows(tmp_path / "b.json", [("distill", 0.9, 0.99, 0.98, 100.0),
                                    ("geodesic", 0.9, 0.96, 0.95, 500.0)])
    table = seeds.table(seeds.load([a, b])).splitlines()
    assert table[2] == "| distill | 90% | 98.00 (97.00-99.00) | 97.00 | 100 |"
    assert table[3] == "| geodesic | 90% | 95.50 (95.00-96.00) | 94.50 | 400 |"
    assert len(table) == 4  # a configuration one seed lacks is left out


def test_the_wins_count_the_seeds_on_which_each_validation_accuracy_is_higher(tmp_path):
    seeds = load_script("frontier_seeds")
    a = _rows(tmp_path / "a.json", [("distill", 0.9, 0.97, 0.96, 100.0),
                                    ("geodesic", 0.9, 0.95, 0.94, 300.0)])
    b = _rows(tmp_path / "b.json", [("distill", 0.9, 0.99, 0.93, 100.0),
                                    ("geodesic", 0.9, 0.96, 0.95, 500.0)])
    c = _rows(tmp_path / "c.json", [("distill", 0.9, 0.99, 0.95, 100.0),
                                    ("geodesic", 0.9, 0.96, 0.95, 500.0)])
    lines = seeds.wins(seeds.load([a, b, c])).splitlines()
    assert lines[0] == "| 90%: validation above, of 3 seeds | (1) | (2) |"
    assert lines[2] == "| (1) distill |  | 1 |"   # above on a only; c is a tie
    assert lines[3] == "| (2) geodesic | 1 |  |"  # above on b only
