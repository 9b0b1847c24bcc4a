import json

import numpy as np
import pytest
import torch

from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.model import BGPT
from bgpt.tasks.cpu.evaluate import (
    Instance,
    Tally,
    baseline_free_run,
    baseline_next,
    bytes_to_states,
    evaluate_cpu,
    format_trace,
)
from bgpt.tasks.cpu.simulator import (
    make_instance,
    random_programs,
    random_start,
    run_program,
    simulate_batch,
)


def instances(n=4, max_len=6, seed=0):
    rng = np.random.default_rng(seed)
    mem, _ = random_programs(rng, n, 2, max_len)
    b = simulate_batch(mem, random_start(rng, n))
    return [Instance.parse(b.instance(i), f"p{i}") for i in range(n)]


def cpu_model(byte_context: bool = False):
    c = BGPTConfig(
        patch_size=16,
        max_patches=80,
        hidden_size=32,
        patch_layers=1,
        byte_layers=1,
        heads=2,
        dropout=0.0,
        byte_context=byte_context,
    )
    return BGPT(c).eval()


def test_pc_ir_baseline_is_exact_on_pc_and_ir():
    for inst in instances(8):
        pred = baseline_next(inst.states[:-1], inst.memory, "pc_ir")
        assert (pred[:, 0] == inst.states[1:, 0]).all()  # PC
        assert (pred[:, 2:6] == inst.states[1:, 2:6]).all()  # fetched IR
        free = baseline_free_run(inst.states[0], inst.memory, "pc_ir", len(inst.states) - 1)
        assert (free[:, 2:6] == inst.states[1:, 2:6]).all()  # straight-line code: the same IRs


def test_tally_counts_missing_bytes_wrong():
    inst = instances(1)[0]
    truth = inst.states[1:]
    t = Tally()
    t.add(inst, truth[:-1])  # the last state missing
    s = t.summary()
    assert s["bytes"] == truth.size and s["byte_accuracy"] == pytest.approx(1 - 16 / truth.size)
    assert s["state_accuracy"] == pytest.approx(1 - 1 / len(truth)) and s["exact_rate"] == 0
    t2 = Tally()
    t2.add(inst, truth)
    assert t2.summary()["exact_rate"] == 1 and t2.summary()["byte_accuracy"] == 1


def test_bytes_to_states_pads_partial_state():
    s = bytes_to_states(bytes(range(20)))
    assert s.shape == (2, 16) and s[1, :4].tolist() == [16, 17, 18, 19] and (s[1, 4:] == -1).all()


def test_evaluate_cpu_report_shape():
    rep = evaluate_cpu(cpu_model(), instances(3), batch_size=2)
    for proto in ("one_step", "free_run"):
        assert set(rep[proto]) >= {"model", "repeat", "pc_ir"}
        assert 0 <= rep[proto]["model"]["byte_accuracy"] <= 1
    assert rep["one_step"]["pc_ir"]["byte_accuracy"] > rep["one_step"]["repeat"]["byte_accuracy"]
    assert {"byte_accuracy", "state_accuracy", "exact_rate"} <= set(rep)
    assert "start" in rep["one_step"]["by_effect"]
    text = format_trace(instances(1)[0], None)
    assert "(given)" in text and "(missing)" in text


def test_accuracy_per_state_byte():
    """by_byte names each of the 16 bytes: the PC+1/fetched-IR baseline is exact on PC and IR
    and wrong exactly where an instruction wrote ACC or a register."""
    insts = instances(6, max_len=12, seed=3)
    rep = evaluate_cpu(cpu_model(), insts, batch_size=4, free_run=False)["one_step"]
    by = rep["pc_ir"]["by_byte"]
    assert list(by)[:6] == ["PC", "ACC", "IR.op", "IR.a1", "IR.a2", "IR.a3"] and len(by) == 16
    assert by["PC"] == by["IR.op"] == by["IR.a3"] == 1.0
    states = sum(len(i.states) - 1 for i in insts)
    changed = sum(int((i.states[1:, 1] != i.states[:-1, 1]).sum()) for i in insts)  # ACC written
    assert by["ACC"] == pytest.approx(1 - changed / states)
    assert np.mean(list(by.values())) == pytest.approx(rep["pc_ir"]["byte_accuracy"])


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_one_step_matches_teacher_forced_greedy_for_first_byte(byte_context):
    model = cpu_model(byte_context)
    inst = instances(1)[0]
    from bgpt.stream import collate, encode
    from bgpt.tasks.cpu.evaluate import one_step_predictions

    pred = one_step_predictions(model, [inst])[0]
    b = collate([encode(inst.memory.tobytes() + inst.states.tobytes(), "bin", 16)])
    with torch.no_grad():
        logits = model.next_byte_logits_naive(
            b.patches[:, :66], b.patches[:, 66, :0]
        )  # state 0 is patch 65
    assert pred[0, 0] == logits.argmax(-1).item()


def test_cpu_run_and_evaluate_cli(tmp_path, capsys):
    from bgpt.checkpoint import save_pretrained

    save_pretrained(cpu_model(), tmp_path / "m")
    (tmp_path / "p.asm").write_text("LOADI 7\nINC\nPOP A\nHLT\n")
    assert main(["cpu", "run", str(tmp_path / "m"), str(tmp_path / "p.asm"), "--state", "A=3"]) == 0
    out = capsys.readouterr().out
    assert "byte accuracy" in out and "(given)" in out
    data = tmp_path / "d"
    data.mkdir()
    for inst in instances(3):
        (data / f"{inst.name}.bin").write_bytes(inst.memory.tobytes() + inst.states.tobytes())
    assert (
        main(
            [
                "cpu",
                "evaluate",
                str(tmp_path / "m"),
                str(data),
                "--json",
                "--plot",
                str(tmp_path / "a.png"),
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"byte_accuracy", "state_accuracy", "exact_rate", "bpb"} <= set(rep)
    assert (tmp_path / "a.png").stat().st_size > 1000
    memory = bytes(1024)
    (data / "long.bin").write_bytes(make_instance(memory, run_program(memory, 0, [0] * 10) * 40))
    assert main(["cpu", "evaluate", str(tmp_path / "m"), str(data)]) == 2
    assert "longer than the model's context" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path, capsys):
    from bgpt.cli import configure_logging
    from bgpt.tasks.cpu.demo import DemoConfig, run_demo

    configure_logging()  # the report goes through the bgpt logger, as `bgpt demo` shows it

    r = run_demo(
        DemoConfig(
            out=str(tmp_path / "demo"),
            minutes=0.1,
            train=64,
            test=6,
            max_len=8,
            hidden_size=32,
            free_run_files=2,
        )
    )
    out = capsys.readouterr().out
    assert "previous state, PC+1, fetched IR" in out and "Run folder" in out
    assert (tmp_path / "demo" / "report.txt").exists() and (
        tmp_path / "demo" / "run" / "best"
    ).exists()
    assert set(r["one_step"]) >= {"model", "repeat", "pc_ir"}
    run_demo(
        DemoConfig(
            out=str(tmp_path / "demo"),
            minutes=0.05,
            train=32,
            test=2,
            max_len=4,
            hidden_size=32,
            free_run_files=1,
        )
    )  # replaces its own folder
