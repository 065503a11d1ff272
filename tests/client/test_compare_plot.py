"""compare and plot over `simulate --out` directories, as a user runs them."""

import json
import subprocess
import sys

import matplotlib.image

CLI = [sys.executable, "-m", "compactsim.client.cli"]


def simulate(out, *sets):
    cmd = CLI + ["simulate", "--scenario", "fill-fragment", "--duration", "3s", "--set",
                 "machine.memory=256MiB", "--no-progress", "--format", "json", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, capture_output=True)


def test_compare_names_spec_differences_and_deltas(tmp_path):
    simulate(tmp_path / "off", "kernel.compaction=false")
    simulate(tmp_path / "on")
    out = subprocess.run(CLI + ["compare", str(tmp_path / "off"), str(tmp_path / "on"),
                                "--format", "json"], capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["spec kernel.compaction"]["values"] == [False, True]
    assert "spec seed" not in rows                     # same seed: not a difference
    off, on = rows["pgmigrate_success"]["values"]
    assert off == 0
    assert rows["pgmigrate_success"]["delta"] == (f"{on - off:+.6g}" if not off else "")
    diff_only = subprocess.run(CLI + ["compare", str(tmp_path / "off"), str(tmp_path / "on"),
                                      "--diff-only", "--format", "json"],
                               capture_output=True, text=True, check=True)
    names = {r["name"] for r in json.loads(diff_only.stdout)}
    assert "struct page bytes" not in names             # equal in both runs
    assert "spec kernel.compaction" in names


def test_plot_writes_a_png(tmp_path):
    simulate(tmp_path / "a")
    png = tmp_path / "p.png"
    subprocess.run(CLI + ["plot", str(tmp_path / "a"), "-o", str(png)], check=True,
                   capture_output=True)
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 500 and image.shape[1] > 500


def test_compare_missing_dir_exits_2(tmp_path):
    out = subprocess.run(CLI + ["compare", str(tmp_path / "nope"), str(tmp_path / "nope2")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "cannot read run results" in out.stderr


def test_plot_gives_orders_9_and_10_their_own_axes_and_a_line_per_run(tmp_path):
    from compactsim.client.output import read_results as _load_out_dir
    from compactsim.client.plot import runs_figure
    simulate(tmp_path / "a")
    simulate(tmp_path / "b", "kernel.compaction=false")
    series = {"with compaction": _load_out_dir(tmp_path / "a")[2],
              "without": _load_out_dir(tmp_path / "b")[2]}
    fig = runs_figure(series)
    panels = {ax.get_title(): ax for ax in fig.axes}
    for order in (9, 10):
        ax = panels[f"free order-{order} blocks"]
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == ["with compaction", "without"]
        top = max(max(ln.get_ydata()) for ln in lines)
        # the axis is scaled to these blocks, not to the low orders' thousands
        assert ax.get_ylim()[1] <= max(2 * top, 1.1)
    # no panel draws more than one line per run (nothing stacked per order or per rate)
    assert all(len(ax.get_lines()) <= 2 for ax in fig.axes)
    assert len({ln.get_linestyle() for ln in panels["free order-9 blocks"].get_lines()}) == 2


def test_compare_groups_runs_of_several_seeds_into_arms(tmp_path):
    for arm, sets in (("off", ["kernel.compaction=false"]), ("on", [])):
        for seed in (1, 2):
            simulate(tmp_path / f"{arm}{seed}", f"seed={seed}", *sets)
    dirs = [str(tmp_path / d) for d in ("off1", "on1", "off2", "on2")]
    out = subprocess.run(CLI + ["compare", *dirs, "--format", "json"], capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout)
    assert result["arms"] == ["kernel.compaction=False", "kernel.compaction=True"]
    assert result["baseline"] == "kernel.compaction=False" and result["seeds"] == [1, 2]
    rows = {r["metric"]: r for r in result["metrics"]}
    off, on = rows["vmstat.pgmigrate_success"]["arms"]
    assert off["count"] == on["count"] == 2 and off["mean"] == 0
    (diff,) = rows["vmstat.pgmigrate_success"]["differences"]
    assert diff["differences"] == on["values"]          # paired by seed against zeros
    csv_out = subprocess.run(CLI + ["compare", *dirs, "--format", "csv", "--baseline",
                                    "kernel.compaction=True"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert csv_out[0].startswith("metric,arm,n,mean,ci_low,ci_high,diff_mean")
    assert any(line.startswith("vmstat.pgmigrate_success,kernel.compaction=False,2,0.0,")
               for line in csv_out)
