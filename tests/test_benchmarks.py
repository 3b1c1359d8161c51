"""The benchmark report writer (no timing here: the timings live in benchmarks/)."""
from benchmarks import run


def test_report_keeps_the_hand_written_notes(tmp_path):
    out = tmp_path / "benchmarks.md"
    notes = run.NOTES_MARK + "\n\n## Reading these numbers\n\nwritten by hand\n"
    out.write_text("# old table\n\n| stale | row |\n\n" + notes, encoding="utf-8")
    rows = [run.Row("conv 3x3 fwd, N1 C1 1x1", (2.0, 1.5), (1.0, 0.9), flops=4e6)]
    run.write_report(out, rows, {"minigrad": 700.0}, threads=2, runs=10)
    text = out.read_text(encoding="utf-8")
    assert "stale" not in text                    # the table itself is rewritten
    assert "| conv 3x3 fwd, N1 C1 1x1 | 2.0 | 1.5 |" in text
    assert "minigrad 700 MiB" in text
    assert text.endswith(notes)                   # the notes are kept, once, at the end
    assert text.count(run.NOTES_MARK) == 1
    run.write_report(out, rows, {}, threads=2, runs=10)   # and survive a second rewrite
    assert out.read_text(encoding="utf-8").endswith(notes)


def test_report_without_notes_has_none(tmp_path):
    out = tmp_path / "benchmarks.md"
    run.write_report(out, [], {}, threads=2, runs=10, done=False)
    text = out.read_text(encoding="utf-8")
    assert run.NOTES_MARK not in text
    assert "stopped early" in text and "Machine:" in text


def test_report_keeps_one_table_per_machine(tmp_path, monkeypatch):
    """A run replaces the table of its own CPU and keeps the other machines'."""
    out = tmp_path / "benchmarks.md"
    out.write_text("# x\n\n" + run.NOTES_MARK + "\n\nnotes\n", encoding="utf-8")
    row = lambda ms: [run.Row("resnet20 training step, batch 128", (ms, ms), (1.0, 1.0))]
    for cpu, ms in [("AMD EPYC", 11.0), ("Intel Xeon", 22.0), ("AMD EPYC", 33.0)]:
        monkeypatch.setattr(run, "cpu_model", lambda cpu=cpu: cpu)
        run.write_report(out, row(ms), {}, threads=2, runs=10)
    text = out.read_text(encoding="utf-8")
    assert text.count("## AMD EPYC, ") == 1 and text.count("## Intel Xeon, ") == 1
    assert "| 33.0 |" in text and "| 22.0 |" in text and "| 11.0 |" not in text
    assert text.index("## AMD EPYC") < text.index("## Intel Xeon")     # the latest run first
    assert text.endswith(run.NOTES_MARK + "\n\nnotes\n")


def test_report_names_both_run_counts(tmp_path):
    """The method paragraph says how many timed runs each median is of: ops and
    training steps are timed a different number of times."""
    out = tmp_path / "benchmarks.md"
    said = lambda: " ".join(out.read_text(encoding="utf-8").split())
    run.write_report(out, [], {}, threads=2, runs=10, op_runs=30)
    assert "medians of 30 runs of each op and 10 of each training step" in said()
    run.write_report(out, [], {}, threads=2, runs=7)
    assert "medians of 7 runs of each op and 7 of each training step" in said()


def test_layer_benchmark_finds_each_convolution_of_resnet20_with_its_count():
    """benchmarks.layers: ResNet-20's 19 convolutions (6n + 1, n = 3), as six
    distinct layers with their counts, and no dx for the first one."""
    from benchmarks import layers
    found = [(tuple(lay["x"][1:]), lay["w"][0], lay["stride"], lay["need_x"], lay["count"])
             for lay in layers.conv_layers("resnet20", batch=2)]
    assert found == [((3, 32, 32), 16, (1, 1), False, 1), ((16, 32, 32), 16, (1, 1), True, 6),
                     ((16, 32, 32), 32, (2, 2), True, 1), ((32, 16, 16), 32, (1, 1), True, 5),
                     ((32, 16, 16), 64, (2, 2), True, 1), ((64, 8, 8), 64, (1, 1), True, 5)]


def test_layer_table_adds_the_layers_up_by_their_counts():
    from benchmarks import layers
    convs = layers.conv_layers("resnet20", batch=2)
    first, deep = convs[0], convs[-1]
    results = [(first, {"fwd": (1.0, 2.0), "bwd": (1.0, 1.0), "dW": (1.0, 1.0)}),
               (deep, {p: (2.0, 1.0) for p in layers.PARTS})]
    text = layers.table("resnet20", results, threads=2)
    lines = text.splitlines()
    assert lines[-3].startswith("| 3 -> 16 on 32x32 | 1 | direct; dx -; dW direct, shifted x | "
                                "1.00 / 2.00 (0.50x) |")
    assert lines[-3].split(" | ")[5] == "-"                     # no dx for the first layer
    assert lines[-2].startswith("| 64 -> 64 on 8x8 | 5 | channels-last | 2.00 / 1.00 (2.00x) |")
    # forward: 1 x 1.0 + 5 x 2.0 = 11 against 1 x 2.0 + 5 x 1.0 = 7; dx: the deep layers only
    assert lines[-1] == ("| all, times their number | 6 |  | 11.00 / 7.00 (1.57x) | "
                         "11.00 / 6.00 (1.83x) | 10.00 / 5.00 (2.00x) | 11.00 / 6.00 (1.83x) |")
