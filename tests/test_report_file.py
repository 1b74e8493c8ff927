"""benchmarks/report_file.py: a benchmark's rerun replaces its own generated part and never the authors' text."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report_file import END, begin_marker, save_figure, write_generated  # noqa: E402

# Each benchmark that writes a results file through write_generated, and the file its default output is
RESULTS = {
    "benchmarks/bench_data_prep.py": "data_prep.md",
    "benchmarks/bench_features.py": "features.md",
    "benchmarks/bench_launch.py": "launch.md",
    "benchmarks/bench_listwise.py": "listwise.md",
    "benchmarks/bench_policy.py": "policy.md",
    "benchmarks/bench_quality.py": "quality.md",
    "benchmarks/bench_scaling.py": "scaling.md",
    "benchmarks/bench_throughput.py": "throughput.md",
    "benchmarks/bench_zero_shot.py": "zero_shot.md",
}


def test_a_rerun_replaces_the_generated_part_and_keeps_the_authors_text(tmp_path):
    path = tmp_path / "r.md"
    write_generated(path, "bench_x.py", "# Title\n\n| a |\n| 1 |")
    path.write_text("Read this first.\n" + path.read_text() + "\n## What it says\nThe analysis.\n")
    assert write_generated(path, "bench_x.py", "# Title\n\n| a |\n| 2 |") == path
    text = path.read_text()
    assert text.startswith("Read this first.\n") and text.endswith("## What it says\nThe analysis.\n")
    assert "| 2 |" in text and "| 1 |" not in text
    assert text.count(begin_marker("bench_x.py")) == 1 and text.count(END) == 1


def test_a_file_without_the_scripts_markers_is_never_overwritten(tmp_path, capsys):
    path = tmp_path / "r.md"
    path.write_text("written by hand\n")
    written = write_generated(path, "bench_x.py", "| new |")
    assert path.read_text() == "written by hand\n"
    assert written == tmp_path / "r.generated.md" and "| new |" in written.read_text()
    assert "left as it is" in capsys.readouterr().out
    write_generated(path, "bench_x.py", "| newer |")  # its own report beside is replaced
    assert "| newer |" in written.read_text() and path.read_text() == "written by hand\n"


def test_a_report_beside_it_that_the_script_did_not_write_stops_the_run(tmp_path):
    (tmp_path / "r.md").write_text("written by hand\n")
    (tmp_path / "r.generated.md").write_text("also by hand\n")
    with pytest.raises(SystemExit, match="give another output path"):
        write_generated(tmp_path / "r.md", "bench_x.py", "| new |")
    assert (tmp_path / "r.generated.md").read_text() == "also by hand\n"


@pytest.mark.parametrize("script", sorted(RESULTS))
def test_every_results_file_holds_its_scripts_generated_part_once(script):
    assert "write_generated(" in (ROOT / script).read_text()
    text = (ROOT / "benchmarks" / "results" / RESULTS[script]).read_text()
    begin = begin_marker(Path(script).name)
    assert text.count(begin) == 1 and END in text[text.index(begin) :]


def test_the_plot_follows_its_report_and_never_replaces_the_authors(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([1, 2], [3, 4])
    (tmp_path / "r.md").write_text("written by hand\n")
    (tmp_path / "r.png").write_bytes(b"the authors' plot")
    report = write_generated(tmp_path / "r.md", "bench_x.py", "| new |")  # diverted: r.generated.md
    assert save_figure(fig, report) == tmp_path / "r.generated.png"
    assert (tmp_path / "r.png").read_bytes() == b"the authors' plot"
    assert (tmp_path / "r.generated.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.generated.md", "r.generated.png", "r.md", "r.png"]
    plt.close(fig)
