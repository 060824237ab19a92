"""Videos of played episodes: every NES frame at full size, with level, step, return and x_pos overlaid.

Episodes are played without recording (fast, no frames held in memory) and the ones worth
watching are played again afterwards from their recorded actions: the emulator is
deterministic, so the second play is the same episode, now with a FrameTap feeding a writer
frame by frame.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Protocol

import cv2
import imageio_ffmpeg
import numpy as np
from PIL import Image

from mario_rl.config import EnvConfig
from mario_rl.envs import make_env
from mario_rl.episodes import Episode

NES_FPS = 60  # 60.0988 Hz precisely; players and MP4 containers round it to 60
NES_SIZE = (256, 240)  # width, height
# GIF delays are whole centiseconds and most viewers slow delays under 20 ms down to 100 ms,
# so 60 fps cannot be written. Every 2nd frame, shown for 30, 30, 40 ms in turn, is 3 frames
# per 100 ms: 30 fps, the game's own pace, with motion still smooth.
GIF_KEEP_EVERY = 2
GIF_DURATIONS_MS = (30, 30, 40)


class VideoWriter(Protocol):
    frames: int

    def add(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class GifWriter:
    """Animated GIF at the game's pace (see GIF_DURATIONS_MS), to a path or a byte buffer.

    Frames are held as 8-bit palette images (61 KB each; a NES screen has under 30 colours,
    so the adaptive palette loses nothing) because Pillow writes a GIF in one go.
    Pillow merges a frame identical to the one before into it, adding up their delays: the
    file may hold fewer frames than ``frames``, never less time.
    """

    def __init__(self, target: str | Path | io.BytesIO):
        self.target = target
        self.frames = 0
        self._seen = 0
        self._images: list[Image.Image] = []

    def add(self, frame: np.ndarray) -> None:
        if self._seen % GIF_KEEP_EVERY == 0:
            self._images.append(Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE))
            self.frames += 1
        self._seen += 1

    def close(self) -> None:
        if not self._images:
            return
        first, *rest = self._images
        durations = list(islice(cycle(GIF_DURATIONS_MS), len(self._images)))
        first.save(self.target, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0)
        self._images = []


class Mp4Writer:
    """H.264 MP4 of every NES frame at 60 fps, streamed to ffmpeg (the binary in the imageio-ffmpeg wheel)."""

    def __init__(self, path: str | Path):
        self.frames = 0
        self._ffmpeg = imageio_ffmpeg.write_frames(str(path), NES_SIZE, fps=NES_FPS, ffmpeg_log_level="error")
        self._ffmpeg.send(None)

    def add(self, frame: np.ndarray) -> None:
        self._ffmpeg.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        self._ffmpeg.close()


def open_writer(path: Path) -> VideoWriter:
    """A GIF or MP4 writer, chosen by the file's suffix."""
    return Mp4Writer(path) if path.suffix == ".mp4" else GifWriter(path)


class Overlay:
    """FrameSink that stamps level, agent step, return so far and x_pos on each frame and writes it.

    Frame n after the reset frame belongs to agent step ceil(n / frame_skip); the return adds
    up the per-frame rewards, so at each step's last frame it equals the agent's return.
    """

    FONT = cv2.FONT_HERSHEY_SIMPLEX
    SCALE = 0.35

    def __init__(self, level: str, frame_skip: int, writer: VideoWriter):
        self.level = level
        self.frame_skip = frame_skip
        self.writer = writer
        self.nes_frames = 0
        self.episode_return = 0.0
        self.x_pos = 0

    @property
    def step(self) -> int:
        return -(-(self.nes_frames - 1) // self.frame_skip)

    def __call__(self, frame: np.ndarray, reward: float, info: dict[str, Any]) -> None:
        self.nes_frames += 1
        self.episode_return += reward
        self.x_pos = int(info["x_pos"])
        text = f"{self.level}  step {self.step}  return {self.episode_return:.0f}  x {self.x_pos}"
        (width, height), base = cv2.getTextSize(text, self.FONT, self.SCALE, 1)
        image = frame.copy()  # nes-py hands out its live screen buffer
        bottom = image.shape[0] - 2
        cv2.rectangle(image, (0, bottom - height - base - 2), (width + 4, image.shape[0]), (0, 0, 0), cv2.FILLED)
        cv2.putText(image, text, (2, bottom - base + 1), self.FONT, self.SCALE, (255, 255, 255), 1, cv2.LINE_AA)
        self.writer.add(image)


def record_episode(env_cfg: EnvConfig, level: str, seed: int, actions: Sequence[int], writer: VideoWriter) -> Episode:
    """Play ``actions`` again from a reset with ``seed``, every NES frame into ``writer`` (closed at the end)."""
    overlay = Overlay(level, env_cfg.frame_skip, writer)
    env = make_env(env_cfg, level, frame_sink=overlay)
    try:
        env.reset(seed=seed)
        for action in actions:
            env.step(action)
    finally:
        env.close()
        writer.close()
    return Episode(
        episode_return=overlay.episode_return,
        length=overlay.step,
        x_pos=overlay.x_pos,
        level=level,
        seed=seed,
        nes_frames=overlay.nes_frames,
    )
