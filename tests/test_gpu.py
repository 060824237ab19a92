"""The learner on a CUDA device while the emulators and the replay stay on the host.

Marked ``gpu`` and skipped without CUDA; benchmarks/gpu_check.sh runs them on a GPU machine.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from mario_rl.checkpointing import load_checkpoint
from mario_rl.losses import double_dqn_targets
from mario_rl.training import train
from tests.conftest import compose_train
from tests.test_nets import near_87

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = ["debug=default", "env.vector=sync"]


class DeviceProbe(pl.Callback):
    """Writes where the first batch, the online net and the replay live to device_probe.json in
    the run dir (train() builds it from the config, so it reports through a file)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        path = Path(trainer.default_root_dir, "device_probe.json")
        if not path.exists():
            seen = {
                "batch": batch["obs"].device.type,
                "online": next(pl_module.online.parameters()).device.type,
                "replay": type(pl_module.stream.replay.frames).__name__,
                "precision": str(trainer.precision),
            }
            path.write_text(json.dumps(seen))


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 400-env-step run with trainer=gpu, and its run dir."""
    out = tmp_path_factory.mktemp("gpu_run")
    train(compose_train([*TINY, "trainer=gpu", "+callbacks.probe._target_=tests.test_gpu.DeviceProbe"], out))
    return out


def test_the_learner_trains_on_cuda_while_the_replay_stays_in_host_memory(gpu_run):
    seen = json.loads((gpu_run / "device_probe.json").read_text())
    assert seen["online"] == "cuda" and seen["batch"] == "cuda"
    assert seen["replay"] == "ndarray"  # sampled as uint8 on the host, moved per batch
    assert seen["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    last = load_checkpoint(gpu_run / "checkpoints" / "last.ckpt")
    assert last["stream"]["env_steps"] == 400 and last["global_step"] == (400 - 64) // 4 + 1


def test_bf16_on_cuda_keeps_q_values_float32_and_agrees_with_fp32():
    online, target = near_87(dueling=True).cuda(), near_87(dueling=True).cuda()
    generator = torch.Generator().manual_seed(1)
    next_obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=generator).cuda()
    returns, discounts = torch.linspace(-15.0, 15.0, 8).cuda(), torch.full((8,), 0.9).cuda()

    def greedy_and_targets() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            next_online, next_target = online(next_obs), target(next_obs)
        targets = double_dqn_targets(next_online, next_target, returns, discounts)
        return next_online, next_online.argmax(dim=1), targets

    _, fp32_actions, fp32_targets = greedy_and_targets()
    with MixedPrecision("bf16-mixed", "cuda").forward_context():
        assert online.torso(next_obs.float()).dtype == torch.bfloat16  # autocast is on
        q, bf16_actions, bf16_targets = greedy_and_targets()
    assert q.dtype == torch.float32
    assert torch.equal(bf16_actions, fp32_actions)
    # within 0.01 on targets near 80, as on the CPU (tests/test_nets.py)
    torch.testing.assert_close(bf16_targets, fp32_targets, rtol=0.0, atol=0.01)


def test_a_checkpoint_saved_on_gpu_resumes_on_cpu(gpu_run):
    saved = load_checkpoint(gpu_run / "checkpoints" / "last.ckpt")
    assert all(t.device.type == "cpu" for t in saved["state_dict"].values())  # loaded onto the host
    resume = ["env_steps=480", "ckpt_path=last", "trainer=cpu"]
    train(compose_train([*TINY, *resume], gpu_run), overrides=resume)
    last = load_checkpoint(gpu_run / "checkpoints" / "last.ckpt")
    # the run went on from its 400 env steps and 85 updates, on the CPU
    assert last["stream"]["env_steps"] == 480 and last["global_step"] == (480 - 64) // 4 + 1
    assert last["hyper_parameters"]["run"] == saved["hyper_parameters"]["run"] | {"env_steps": 480}
