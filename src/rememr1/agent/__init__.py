"""The memory agent: methods, one state transition, episodes, the engine, the Agent.

    from rememr1.agent import Agent, AgentConfig, transition
    agent = Agent(backend, AgentConfig(method="rememr1", chunk_size=5000))
    agent.answer(document, question).answer

Modules, each importing only those before it: `methods` (the method table), `config`
(AgentConfig), `spec` (EpisodeSpec: what an episode reads, built once by the Agent),
`episode` (state, `transition`, the episode classes), `engine` (every episode at its own
pace), `core` (Agent).
"""

from .config import AgentConfig
from .core import Agent
from .engine import StepCallback, drive, run_sync
from .episode import (
    NO_COMPAT,
    AgentState,
    Episode,
    FullContextEpisode,
    MemoryEpisode,
    RagEpisode,
    Transition,
    make_episode,
    recalled_text,
    request_seed,
    transition,
)
from .methods import METHODS, Method, get_method
from .spec import EpisodeSpec

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "Episode",
    "EpisodeSpec",
    "FullContextEpisode",
    "METHODS",
    "MemoryEpisode",
    "Method",
    "NO_COMPAT",
    "RagEpisode",
    "StepCallback",
    "Transition",
    "drive",
    "get_method",
    "make_episode",
    "recalled_text",
    "request_seed",
    "run_sync",
    "transition",
]
