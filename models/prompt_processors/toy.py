"""Prompt processor for the toy world: the prompt parses into a known scene (TOYWORLD.md).

Toy priors condition on the scene itself rather than on text embeddings, so "processing" is
parsing. It happens at construction, so a prompt outside the toy grammar stops the run before
anything heavy starts, with a message that lists what the toy world understands.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.interfaces import PromptProcessor
from models.priors.toy.scenes import ToyScene, parse_prompt


@dataclass(frozen=True)
class ToyCondition:
    """What toy priors consume: the canonical prompt and its parsed scene."""

    prompt: str
    scene: ToyScene


@dataclass
class ToyPromptProcessorConfig:
    _target_: str = "models.prompt_processors.toy.ToyPromptProcessor"
    prompt: str = "???"


class ToyPromptProcessor(PromptProcessor):
    def __init__(self, cfg: ToyPromptProcessorConfig, **runtime_objects: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.scene = parse_prompt(cfg.prompt)  # raises ToyPromptError for a bad prompt
        self.condition = ToyCondition(prompt=self.scene.prompt, scene=self.scene)

    def forward(self) -> ToyCondition:
        return self.condition
