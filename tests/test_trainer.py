"""The shared trainer: gradient mask over real optimiser steps (single process, gradient
accumulation, bf16 autocast, 2-process DDP), γ ∈ {0, 1}, loss, batches, resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXTransformer3DModel

from dualreal.adapters import DualRealAdapters, DualRealModel
from dualreal.engine.backbone import TINY_PRESET
from dualreal.config import DualRealConfig
from dualreal.controller import StageBlenderController
from dualreal.method import dualreal_mask, train_dualreal
from dualreal.engine.trainer import (
    CaseBatchSource,
    EncodedCase,
    TrainBatch,
    TrainerConfig,
    train,
    v_prediction_loss,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
    text_embed_dim=12, num_layers=6, sample_width=8, sample_height=8, sample_frames=5, patch_size=2,
    max_text_seq_length=6, use_rotary_positional_embeddings=True,
)
COND = 10




def small_setup(seed: int = 0):
    torch.manual_seed(seed)
    tr = CogVideoXTransformer3DModel(**SMALL).eval().requires_grad_(False)
    adapters = DualRealAdapters(6, 32, bottleneck_dim=4, condition_dim=COND)
    ctrl = StageBlenderController(inner_dim=32, time_embed_dim=16, head_dim=8, num_groups=3)
    return tr, DualRealModel(tr, adapters, ctrl), CogVideoXDPMScheduler(**TINY_PRESET["scheduler"])


class Scripted:
    """A batch source with a fixed sequence of kinds and random latents."""

    def __init__(self, kinds):
        self.kinds = list(kinds)

    def next_kind(self, step, generator):
        return self.kinds[step]

    def next_batch(self, kind, generator):
        frames = 1 if kind == "identity" else 2
        kwargs = {"condition": torch.randn(2, COND, generator=generator)} if kind == "motion" else {}
        return TrainBatch(
            kind=kind,
            latents=torch.randn(2, frames, 4, 8, 8, generator=generator),
            prompt_embeds=torch.randn(2, 6, 12, generator=generator),
            model_kwargs=kwargs,
        )


def snapshot(groups, optimizer=None):
    inner = getattr(optimizer, "optimizer", optimizer)
    state = inner.state if inner is not None else {}
    return {
        name: [
            (p.detach().clone(), {k: v.clone() if torch.is_tensor(v) else v for k, v in state.get(p, {}).items()})
            for p in ps
        ]
        for name, ps in groups.items()
    }


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def check_step(before, after, kind):
    """The invariant of docs/METHOD.md §3.5 between two snapshots around one optimiser step."""
    other = "motion" if kind == "identity" else "identity"
    for (w0, s0), (w1, s1) in zip(before[other], after[other]):
        assert torch.equal(w0, w1), f"{kind} step moved an inactive {other} weight"
        assert same_state(s0, s1), f"{kind} step changed the AdamW state of an inactive {other} weight"
    for group in (kind, "controller"):
        changed = [not torch.equal(w0, w1) for (w0, _), (w1, _) in zip(before[group], after[group])]
        assert any(changed), f"{kind} step did not move the {group} parameters"
        for (_, s0), (_, s1) in zip(before[group], after[group]):
            assert int(s1["step"]) == int(s0.get("step", 0)) + 1, f"{group} AdamW step count did not advance"


@pytest.mark.parametrize("precision,accumulation", [("no", 1), ("no", 2), ("bf16", 2)])
def test_gradient_mask_invariant_over_real_steps(precision, accumulation):
    tr, model, sched = small_setup()
    groups = model.parameter_groups()
    kinds = ["motion", "identity", "identity", "motion", "identity"]
    snaps = [snapshot(groups)]
    micro = []

    def on_end(info):
        snaps.append(snapshot(groups, info.optimizer))

    result = train(
        tr, groups, Scripted(kinds), noise_scheduler=sched, model=model,
        config=TrainerConfig(train_steps=len(kinds), lr_warmup_steps=0, mixed_precision=precision,
                             gradient_accumulation_steps=accumulation),
        active_groups=dualreal_mask, on_step_end=on_end,
        extra_losses={"count": lambda ctx: micro.append(ctx.kind)},
    )
    assert result.kinds == kinds and len(micro) == len(kinds) * accumulation
    assert micro == [k for k in kinds for _ in range(accumulation)]  # a step's micro-batches share a kind
    for step, kind in enumerate(kinds):
        check_step(snaps[step], snaps[step + 1], kind)
    # every trainable parameter is trainable again after training; the base stays frozen
    assert all(p.requires_grad for ps in groups.values() for p in ps)
    assert not any(p.requires_grad for p in tr.parameters())


def test_without_the_mask_the_frozen_adapter_leaks():
    tr, model, sched = small_setup()
    groups = model.parameter_groups()
    before = snapshot(groups)
    train(tr, groups, Scripted(["identity"] * 2), noise_scheduler=sched, model=model,
          config=TrainerConfig(train_steps=2, lr_warmup_steps=0), active_groups=None)
    after = snapshot(groups)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(before["motion"], after["motion"]))


def encoded_case(num_images=2, num_clips=3):
    g = torch.Generator().manual_seed(3)
    return EncodedCase(
        identity_latents=[torch.randn(1, 8, 1, 8, 8, generator=g) for _ in range(num_images)],
        identity_prompt_embeds=[torch.randn(1, 6, 12, generator=g) for _ in range(num_images)],
        motion_latents=[torch.randn(1, 8, 2, 8, 8, generator=g) for _ in range(num_clips)],
        motion_prompt_embeds=[torch.randn(1, 6, 12, generator=g) for _ in range(num_clips)],
        motion_frame_embeds=[torch.randn(5, COND, generator=g) for _ in range(num_clips)],
        ref_embedding=torch.randn(1, COND, generator=g),
        scaling_factor=0.7,
        num_frames=5,
    )


@pytest.mark.parametrize("gamma,trained,frozen", [(0.0, "identity", "motion"), (1.0, "motion", "identity")])
def test_gamma_zero_or_one_trains_one_adapter(gamma, trained, frozen):
    tr, model, sched = small_setup()
    groups = model.parameter_groups()
    before = snapshot(groups)
    cfg = DualRealConfig(train_steps=3, lr_warmup_steps=0, motion_ratio=gamma, motion_batch_size=2, train_frames=5, mixed_precision="no",
                         gradient_checkpointing=False)
    out = train_dualreal(SimpleNamespace(transformer=tr, scheduler=sched), model, encoded_case(), cfg)
    assert out["runs"]["joint"].kinds == [trained] * 3
    after = snapshot(groups)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(before[frozen], after[frozen]))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(before[trained], after[trained]))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(before["controller"], after["controller"]))


def test_case_batch_source():
    enc = encoded_case()
    src = CaseBatchSource(enc, motion_ratio=0.5, motion_batch_size=2)
    g = torch.Generator().manual_seed(0)
    kinds = [src.next_kind(i, g) for i in range(200)]
    u = torch.Generator().manual_seed(0)  # Z = 1 (motion) iff U < γ, one uniform draw per step
    assert kinds == ["motion" if torch.rand((), generator=u) < 0.5 else "identity" for _ in range(200)]
    assert 0 < kinds.count("motion") < 200  # both kinds occur with this seed
    g30 = torch.Generator().manual_seed(0)
    kinds30 = [CaseBatchSource(enc, motion_ratio=0.3).next_kind(i, g30) for i in range(200)]
    assert all(k30 == "identity" for k, k30 in zip(kinds, kinds30) if k == "identity")  # same U: γ 0.3 ⊂ γ 0.5
    assert kinds30.count("motion") < kinds.count("motion")
    ident = src.next_batch("identity", g)
    assert ident.latents.shape == (1, 1, 4, 8, 8) and ident.model_kwargs == {}  # no c in identity steps
    conds = []
    for _ in range(6):
        motion = src.next_batch("motion", g)
        assert motion.latents.shape == (2, 2, 4, 8, 8) and motion.model_kwargs["condition"].shape == (2, COND)
        assert len(set(motion.extras["indices"])) == 2  # clips without replacement
        conds.append(motion.extras["condition_frames"])
    assert len({tuple(c) for c in conds}) > 1  # the conditioning frame is drawn afresh per step
    assert [CaseBatchSource(enc, schedule="alternate").next_kind(i, g) for i in range(4)] == ["identity", "motion"] * 2
    with pytest.raises(ValueError, match="no identity images"):
        CaseBatchSource(encoded_case(num_images=0), motion_ratio=0.5)
    with pytest.raises(ValueError, match="motion_ratio must be in"):
        CaseBatchSource(enc, motion_ratio=1.5)


def test_v_loss_equals_the_diffusers_weighted_x0_form():
    sched = CogVideoXDPMScheduler(**TINY_PRESET["scheduler"])
    g = torch.Generator().manual_seed(0)
    x0, noise, pred = (torch.randn(3, 2, 4, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([0, 500, 999])
    noisy = sched.add_noise(x0, noise, t)
    v = sched.get_velocity(x0, noise, t)
    x0_hat = sched.get_velocity(pred, noisy, t)  # diffusers' scripts: the x0 implied by a v-prediction
    weights = (1 / (1 - sched.alphas_cumprod[t])).float()
    per_sample = (weights.view(-1, 1, 1, 1, 1) * (x0_hat - x0) ** 2).mean(dim=(1, 2, 3, 4))
    ours = torch.stack([v_prediction_loss(pred[i], v[i]) for i in range(3)])
    torch.testing.assert_close(ours, per_sample, rtol=1e-4, atol=1e-5)
    mask = torch.zeros(3, 2, 1, 8, 8)
    mask[..., :4, :] = 1
    expected = ((pred - v) ** 2)[..., :4, :].mean()
    torch.testing.assert_close(v_prediction_loss(pred, v, mask), expected)


def test_finished_checkpoint_is_loaded_not_retrained(tmp_path):
    tr, model, sched = small_setup()
    groups = model.parameter_groups()
    cfg = TrainerConfig(train_steps=2, lr_warmup_steps=0)
    first = train(tr, groups, Scripted(["motion", "identity"]), noise_scheduler=sched, model=model,
                  config=cfg, active_groups=dualreal_mask, workdir=tmp_path, checkpoint_config={"a": 1})
    assert not first.resumed and json.loads((tmp_path / "train_state.json").read_text())["finished"]
    trained = {k: v.clone() for k, v in model.trainable_state_dict().items()}

    tr2, fresh, _ = small_setup()
    steps = []
    again = train(tr2, fresh.parameter_groups(), Scripted(["motion", "identity"]), noise_scheduler=sched, model=fresh,
                  config=cfg, workdir=tmp_path, checkpoint_config={"a": 1}, on_step_end=steps.append)
    assert again.resumed and not steps and again.kinds == ["motion", "identity"]
    assert all(torch.equal(trained[k], v) for k, v in fresh.trainable_state_dict().items())
    with pytest.raises(ValueError, match=r"another configuration \(a: 1 → 2\)"):
        train(tr2, fresh.parameter_groups(), Scripted(["motion"]), noise_scheduler=sched, model=fresh,
              config=cfg, workdir=tmp_path, checkpoint_config={"a": 2})


def test_checkpoint_files_are_published_atomically_state_last(tmp_path, monkeypatch):
    """write_checkpoint: the old "finished" marker goes first, then every weight file is fsync'ed
    and renamed in, then config.json, and train_state.json last; a failing writer leaves an
    unfinished folder and no staging folder."""
    from dualreal.engine.trainer import checkpoint

    (tmp_path / "train_state.json").write_text('{"finished": true}')
    events = []
    real_replace, real_json = checkpoint.atomic_replace, checkpoint.atomic_write_json

    def replace(src, dst):
        events.append((Path(dst).name, (tmp_path / "train_state.json").exists()))
        return real_replace(src, dst)

    def write_json(path, data, **kw):
        events.append((Path(path).name, (tmp_path / "train_state.json").exists()))
        return real_json(path, data, **kw)

    monkeypatch.setattr(checkpoint, "atomic_replace", replace)
    monkeypatch.setattr(checkpoint, "atomic_write_json", write_json)

    def weights(folder):
        (folder / "a.safetensors").write_bytes(b"a")
        (folder / "b.safetensors").write_bytes(b"b")

    checkpoint.write_checkpoint(tmp_path, weights, {"x": 1}, {"finished": True, "steps": 3})
    assert events == [("a.safetensors", False), ("b.safetensors", False), ("config.json", False), ("train_state.json", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "config.json", "train_state.json"]
    assert json.loads((tmp_path / "train_state.json").read_text()) == {"finished": True, "steps": 3}

    def broken(folder):
        (folder / "a.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_checkpoint(tmp_path, broken, {"x": 2}, {"finished": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "config.json"]  # not finished
    assert (tmp_path / "a.safetensors").read_bytes() == b"a"  # a failed write publishes nothing
    with pytest.raises(ValueError, match="weight files only, got 'config.json'"):
        checkpoint.write_checkpoint(tmp_path, lambda f: (f / "config.json").write_text("{}"), {"x": 1}, {"finished": True})


def test_bad_groups_are_refused():
    tr, model, sched = small_setup()
    groups = model.parameter_groups()
    with pytest.raises(ValueError, match="overlap"):
        train(tr, {"a": groups["identity"], "b": groups["identity"][:1]}, Scripted(["identity"]), noise_scheduler=sched, model=model)
    with pytest.raises(ValueError, match="must belong to `model`"):
        train(tr, {"x": [torch.nn.Parameter(torch.zeros(2))]}, Scripted(["identity"]), noise_scheduler=sched, model=model)
    with pytest.raises(ValueError, match=r"unknown groups \['nope'\]"):
        train(tr, groups, Scripted(["identity"]), noise_scheduler=sched, model=model,
              config=TrainerConfig(train_steps=1), active_groups=lambda kind: {"nope"})


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, {tests!r})
    from test_trainer import Scripted, small_setup, snapshot, check_step
    from dualreal.method import dualreal_mask
    from dualreal.engine.trainer import TrainerConfig, train

    tr, model, sched = small_setup()
    groups = model.parameter_groups()
    kinds = ["motion", "identity", "motion", "identity"]
    snaps = [snapshot(groups)]
    seen = {{}}
    def on_end(info):
        seen["type"] = info.accelerator.distributed_type.value
        seen["wrapped"] = type(info.model).__name__
        seen["world"] = info.accelerator.num_processes
        snaps.append(snapshot(groups, info.optimizer))
    train(tr, groups, Scripted(kinds), noise_scheduler=sched, model=model, on_step_end=on_end,
          config=TrainerConfig(train_steps=4, lr_warmup_steps=0, gradient_accumulation_steps=2, distributed="ddp"),
          active_groups=dualreal_mask)
    for i, k in enumerate(kinds):
        check_step(snaps[i], snaps[i + 1], k)
    seen["digest"] = sum(float(p.detach().double().sum()) for ps in groups.values() for p in ps)
    rank = torch.distributed.get_rank()

    # distributed="local" (the run loop's case sharding): ranks train different numbers of steps,
    # never wait for each other, and a rank's result does not depend on its rank.
    tr, model, sched = small_setup()
    local = {{}}
    steps = 1 + 2 * rank
    train(tr, model.parameter_groups(), Scripted(["motion", "identity", "motion"]), noise_scheduler=sched,
          model=model, config=TrainerConfig(train_steps=steps, lr_warmup_steps=0),
          active_groups=dualreal_mask, on_step_end=lambda info: local.update(type=type(info.model).__name__))
    seen["local_model"] = local["type"]
    seen["local_digest"] = sum(float(p.detach().double().sum()) for ps in model.parameter_groups().values() for p in ps)
    open(f"result_{{rank}}.json", "w").write(json.dumps(seen))
    """
)


def test_gradient_mask_holds_under_ddp_with_two_processes(tmp_path):
    """2 CPU processes (gloo) through accelerate. ``ddp``: DDP wrapping, find_unused_parameters,
    masked groups untouched on every rank, ranks in sync. ``local``: no wrapping, no waiting, the
    same result as a single process."""
    script = tmp_path / "ddp_mask.py"
    script.write_text(DDP_SCRIPT.format(tests=str(REPO / "tests")))
    with socket.socket() as s:  # a free port for the rendezvous (torchrun does not take port 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        out, err = proc.communicate()
        pytest.fail(f"2-process run hung:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    results = [json.loads((tmp_path / f"result_{rank}.json").read_text()) for rank in (0, 1)]
    for r in results:
        assert (r["type"], r["wrapped"], r["world"]) == ("MULTI_CPU", "DistributedDataParallel", 2)
    assert results[0]["digest"] == results[1]["digest"]  # identical parameters on both ranks
    assert results[0]["local_model"] == results[1]["local_model"] == "DualRealModel"  # not DDP-wrapped
    assert results[0]["local_digest"] != results[1]["local_digest"]  # 1 vs 3 steps, no sync
    tr, model, sched = small_setup()  # rank 0's local run, reproduced in this single process
    train(tr, model.parameter_groups(), Scripted(["motion"]), noise_scheduler=sched, model=model,
          config=TrainerConfig(train_steps=1, lr_warmup_steps=0), active_groups=dualreal_mask)
    digest = sum(float(p.detach().double().sum()) for ps in model.parameter_groups().values() for p in ps)
    assert digest == results[0]["local_digest"]
