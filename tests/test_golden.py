"""Golden records: seeded fake-trainer searches must keep giving the same trials.

The files in tests/golden/ were written by this module (``python -m
tests.test_golden``) before the package was restructured; a refactor that
changes what a search proposes, rewards or records fails here. Timings,
process ids and the worker that ran a candidate are left out (they depend on
the machine), everything else is compared.
"""
import dataclasses
import json
import os
import sys

import pytest

from tests.test_search import make_config, run

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
VOLATILE = ("seconds", "time", "worker", "device")
VOLATILE_METRICS = ("pid", "seconds")

# name -> (make_config arguments, injected faults)
CASES = {
    "rl_hard": (dict(searcher="rl", num_models=16, batch_size=4, num_nodes=2,
                     max_params=3000, infeasible_reward=-0.5), {1: "nan", 5: "nan", 9: "nan"}),
    "rl_median_soft": (dict(searcher="rl", num_models=20, batch_size=4, num_nodes=3,
                            max_params=3000, mode="soft", lookahead=0,
                            search=dict(early_termination="median", cull_start_epoch=2)), {}),
    "random_hard": (dict(searcher="random", num_models=16, batch_size=4, num_nodes=2,
                         max_params=3000), {3: "raise"}),
    "evolution_soft": (dict(searcher="evolution", num_models=16, batch_size=4, num_nodes=3,
                            max_params=3000, mode="soft"), {}),
}


def stable(trials):
    """The records sorted by index, without machine-dependent fields; floats rounded."""
    def clean(v):
        if isinstance(v, float):
            return round(v, 9)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    out = []
    for t in sorted(trials, key=lambda t: t["index"]):
        t = {k: v for k, v in t.items() if k not in VOLATILE}
        t["metrics"] = {k: v for k, v in t["metrics"].items() if k not in VOLATILE_METRICS}
        if t["status"] == "failed":
            t["reason"] = t["reason"].split("\n")[0]
        out.append(clean(t))
    return out


def records_of(name, log_dir):
    kwargs, faults = dict(CASES[name][0]), CASES[name][1]
    search_overrides = kwargs.pop("search", {})
    config = make_config(log_dir, **kwargs)
    config = dataclasses.replace(config, search=dataclasses.replace(config.search,
                                                                    **search_overrides))
    code, trials, _ = run(config, faults=faults)
    assert code == 0
    return stable(trials)


@pytest.mark.parametrize("name", sorted(CASES))
def test_records_match_the_golden_file(tmp_path, name):
    with open(os.path.join(GOLDEN, name + ".json")) as f:
        expected = json.load(f)
    got = records_of(name, tmp_path / "log")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == e, "record #%d differs" % e["index"]


if __name__ == "__main__":  # writes the golden files
    import tempfile
    for name in sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            recs = records_of(name, os.path.join(d, "log"))
        with open(os.path.join(GOLDEN, name + ".json"), "w") as f:
            json.dump(recs, f, indent=1, sort_keys=True)
        print(name, len(recs), "records", {s: sum(r["status"] == s for r in recs)
                                           for s in ("ok", "failed", "infeasible", "duplicate")},
              file=sys.stderr)
