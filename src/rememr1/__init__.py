"""rememr1: long-document question answering with a revisitable-memory agent (ReMemR1),
its baselines, benchmarks and RL training.

    from rememr1 import Agent, AgentConfig, SamplingParams, load_backend
    agent = Agent(load_backend("llamacpp"), AgentConfig(method="rememr1"))
    print(agent.answer(document_text, "Which company built the ship?").answer)
"""

from .agent import METHODS, Agent, AgentConfig, AgentState, Episode, transition
from .backends import load_backend
from .backends.base import Backend, ChatRequest, Generation, SamplingParams
from .compat import AgentCompat
from .errors import BackendError, InputError, RememrError
from .protocol import answer_of
from .records import AnswerResult, RecallHit, StepRecord

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Agent",
    "AgentCompat",
    "AgentConfig",
    "AgentState",
    "AnswerResult",
    "Backend",
    "BackendError",
    "ChatRequest",
    "Episode",
    "Generation",
    "InputError",
    "RecallHit",
    "RememrError",
    "SamplingParams",
    "StepRecord",
    "answer_of",
    "load_backend",
    "transition",
]
