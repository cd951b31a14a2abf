"""Training: a few real steps on real speech, checkpoints in safetensors, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from voxtok.config import CodecConfig
from voxtok.train import TrainConfig, Trainer
from voxtok.trainers import load_recipe

REPO = Path(__file__).resolve().parent.parent
TINY = dict(enc_sub_dim=16, enc_sub_layers=1, enc_dim=32, enc_layers=1, latent_dim=16, dec_dim=32, dec_layers=1,
            num_quantizers=4, codebook_size=64)


def tiny_trainer(tmp_path: Path, real_root: Path, steps: int, adversarial_start: int = 3) -> Trainer:
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=steps, batch_size=2, crop_seconds=0.5,
                      warmup_steps=2, adversarial_start=adversarial_start, log_every=2, eval_every=1000,
                      checkpoint_every=2, eval_files=1, real_root=str(real_root),
                      real_split=str(REPO / "codec/splits/real_dev.txt"),
                      dev_split=str(REPO / "codec/splits/real_dev.txt"),
                      threads=1)
    return Trainer(CodecConfig(name="tiny", **TINY), cfg, progress=False)


def test_shipped_recipe_parses():
    model_cfg, cfg = load_recipe(REPO / "recipes" / "codec_16k.toml")
    assert model_cfg.name == "voxtok-16k" and model_cfg.frame_rate == 50
    assert cfg.adversarial_start < cfg.steps and cfg.use_period_discriminator and cfg.use_resolution_discriminator


def test_train_checkpoint_resume(tmp_path, real_root):
    trainer = tiny_trainer(tmp_path, real_root, steps=4)
    trainer.train()
    ckpt = tmp_path / "run" / "checkpoint"
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["config.json", "discriminators.safetensors", "model.safetensors", "optimizer.safetensors",
                     "trainer_state.json"]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("d_loss" in r for r in log), "adversarial losses must be on after adversarial_start"
    assert any(k.startswith("dev/mel@") for r in log for k in r)
    # Resume: a new trainer picks up step, weights and optimizer moments, then goes on.
    resumed = tiny_trainer(tmp_path, real_root, steps=6)
    assert resumed.load_checkpoint() and resumed.step == 4
    saved = load_file(str(ckpt / "model.safetensors"))
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    moments = [s["exp_avg"] for s in resumed.opt_g.state.values()]
    assert moments and all(m.abs().sum() > 0 for m in moments)
    resumed.train()
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 6


def test_mel_loss_goes_down_on_real_speech(tmp_path, real_root):
    trainer = tiny_trainer(tmp_path, real_root, steps=1000, adversarial_start=10_000)
    trainer.build_data()
    trainer.model.train()
    torch.manual_seed(0)
    fixed = trainer.batch()
    with torch.no_grad():
        trainer.model.quantizer.initialize(trainer.model.encoder(fixed))
    trainer.batch = lambda: fixed  # overfit one batch: the loss must fall
    first = trainer.train_step()["mel"]
    for _ in range(25):
        trainer.step += 1
        last = trainer.train_step()["mel"]
    assert last < 0.8 * first


def test_bad_recipe_is_refused(tmp_path):
    from voxtok.errors import VoxtokError

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nno_such_key = 1\n")
    with pytest.raises(VoxtokError, match="unknown recipe keys"):
        load_recipe(bad)


def test_recipe_base_is_overlaid(tmp_path):
    """`base = "..."`: the base's tables first, this recipe's keys over them, key by key (terms too); a loop of
    bases and a missing base are refused with one clear error."""
    from voxtok.errors import VoxtokError

    model_cfg, cfg = load_recipe(REPO / "recipes" / "lowrate_12hz_phone_long.toml")
    _, base_cfg = load_recipe(REPO / "recipes" / "lowrate_12hz_phone.toml")
    assert cfg.steps == 6000 != base_cfg.steps and cfg.out_dir != base_cfg.out_dir
    phone, base_phone = cfg.terms["phone"], base_cfg.terms["phone"]
    assert phone["weight"] == 2.0 != base_phone["weight"] and phone["positions"] == base_phone["positions"]
    assert cfg.batch_size == base_cfg.batch_size and cfg.mel_weight == base_cfg.mel_weight
    (tmp_path / "a.toml").write_text('base = "b.toml"\n[train]\nbatch_size = 2\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(VoxtokError, match="loop"):
        load_recipe(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('base = "missing.toml"\n')
    with pytest.raises(VoxtokError, match="recipe not found"):
        load_recipe(tmp_path / "c.toml")


def test_resume_from_committed_checkpoint_without_optimizer(tmp_path, real_root):
    trainer = tiny_trainer(tmp_path, real_root, steps=2, adversarial_start=100)
    trainer.train()
    (tmp_path / "run" / "checkpoint" / "optimizer.safetensors").unlink()
    resumed = tiny_trainer(tmp_path, real_root, steps=4, adversarial_start=100)
    assert resumed.load_checkpoint() and resumed.step == 2 and resumed.rewarm_from == 2
    resumed.train()
    assert (tmp_path / "run" / "checkpoint" / "optimizer.safetensors").is_file()


def test_packed_checkpoint_is_small_and_resumes(tmp_path, real_root):
    """recipes/pack_checkpoint.py (how the committed checkpoint is made): fp16 weights, fp32 codebooks, no optimizer,
    the log carried over; a run resumed from it starts at its step with the same codebooks."""
    import shutil
    import sys

    sys.path.insert(0, str(REPO / "recipes"))
    from pack_checkpoint import pack

    trainer = tiny_trainer(tmp_path, real_root, steps=4, adversarial_start=100)
    trainer.train()
    packed = tmp_path / "packed"
    assert pack(tmp_path / "run", packed) == 4
    assert not (packed / "optimizer.safetensors").exists()
    weights = load_file(str(packed / "model.safetensors"))
    full = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert weights.keys() == full.keys()
    for name, value in weights.items():
        if "_codebook." in name:
            assert value.dtype == full[name].dtype and torch.equal(value, full[name])
        elif value.is_floating_point():
            assert value.dtype == torch.float16 and torch.allclose(value.float(), full[name], rtol=1e-3, atol=1e-4)
    logged = [json.loads(line)["step"] for line in (packed / "log.jsonl").read_text().splitlines()]
    assert sorted(set(logged)) == [2, 4]  # training entries at 2 and 4, the final dev eval at 4

    shutil.rmtree(tmp_path / "run")
    (tmp_path / "run").mkdir()
    shutil.copytree(packed, tmp_path / "run" / "checkpoint")
    resumed = tiny_trainer(tmp_path, real_root, steps=6, adversarial_start=100)
    assert resumed.load_checkpoint() and resumed.step == 4 and resumed.rewarm_from == 4
    for name, value in resumed.model.state_dict().items():
        if name in weights and "_codebook.embed" in name:
            assert torch.equal(value.cpu(), weights[name])
    resumed.train()
    assert resumed.step == 6


@pytest.mark.parametrize("threshold, churns", [(2.0, True), (0.1, False)])
def test_dead_code_expiry_near_the_mean_use_redraws_the_codebook_every_step(threshold, churns):
    """With 64 frames per step over 64 codes (mean use 1), a threshold of 2 re-draws most of the codebook at every
    step, however long it trains; a threshold of 0.1 lets it settle. The trainer's warning says which is which."""
    from voxtok.quantization import ResidualQuantizer, dead_code_churn_warning

    torch.manual_seed(0)
    centres = torch.randn(16, 8) * 3
    quantizer = ResidualQuantizer(8, 1, 64, dead_code_threshold=threshold, kmeans_iters=2).train()
    for _ in range(60):
        batch = centres[torch.randint(0, 16, (64,))] + 0.3 * torch.randn(64, 8)
        quantizer(batch.t()[None])
    redrawn = (quantizer.rvq.layers[0]._codebook.cluster_size == threshold).float().mean().item()
    assert (redrawn > 0.3) if churns else (redrawn < 0.05), redrawn
    assert (dead_code_churn_warning(threshold, 64, 64) is not None) == churns
