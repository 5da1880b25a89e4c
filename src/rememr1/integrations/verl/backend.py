"""verl's LLM server client as a rememr1 backend: token ids in, token ids (and log-probs) out.

One backend serves one episode (`agent_loop.ReMemR1AgentLoop.run` makes it), so it sends
every request of the episode with the same `request_id`: verl's load balancer keeps a
request id on one server, whose prefix cache then holds the instructions and question that
every step's prompt repeats. Each request's seed is the episode's per-step seed
(`agent.episode.request_seed`), sent as vLLM's per-request `seed`.

The agent reads only text and token ids; what the server returns beyond them (the sampled
tokens' log-probs, the weight versions it generated under) is kept here, per (prompt ids,
completion ids), for the loop to put on each training row (`reply_for`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...backends.base import FINISH_LENGTH, FINISH_STOP, Backend, ChatRequest, Generation, SamplingParams
from ...backends.tokenization import HFTokenizer


@dataclass(frozen=True)
class ServerReply:
    """What the server returned for one request, beyond the token ids."""

    log_probs: tuple[float, ...] | None
    extra_fields: dict[str, Any] = field(default_factory=dict)


class ServerManagerBackend(Backend):
    """verl's server client (`LLMServerClient.generate`) as a rememr1 backend.

    `sampling_params` are verl's (temperature, top_p, top_k, logprobs, ...); each request
    adds its own `max_tokens` (the step's budget cut to the context window, `Backend.plan`)
    and its seed.
    """

    name = "verl"
    model_name = "verl-policy"

    def __init__(self, server_manager, tokenizer, sampling_params: dict[str, Any], *,
                 context_window: int, request_id: str):
        self.server_manager = server_manager
        self.hf_tokenizer = tokenizer
        self._tokenizer = HFTokenizer(tokenizer)
        self.sampling_params = dict(sampling_params)
        self.context_window = int(context_window)
        self.request_id = request_id
        eos = tokenizer.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._replies: dict[tuple[tuple[int, ...], tuple[int, ...]], ServerReply] = {}

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        ids = self.hf_tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                    tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        raise NotImplementedError("the verl backend is asynchronous: use asubmit (the engine does)")

    async def asubmit(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        plan = self.plan(request, sampling)
        if isinstance(plan, Generation):
            return plan
        params = {**self.sampling_params, "max_tokens": plan.max_new}
        if plan.seed is not None:
            params["seed"] = plan.seed
        out = await self.server_manager.generate(request_id=self.request_id, prompt_ids=list(plan.prompt_ids),
                                                 sampling_params=params)
        ids = tuple(int(i) for i in out.token_ids)
        log_probs = getattr(out, "log_probs", None)
        self._replies[(tuple(plan.prompt_ids), ids)] = ServerReply(
            log_probs=tuple(float(x) for x in log_probs) if log_probs is not None else None,
            extra_fields=dict(getattr(out, "extra_fields", None) or {}),
        )
        ended = bool(ids) and ids[-1] in self._eos
        finish = FINISH_STOP if ended or len(ids) < plan.max_new else FINISH_LENGTH
        return Generation(
            text=self.hf_tokenizer.decode(list(ids), skip_special_tokens=True), finish_reason=finish,
            prompt_tokens=len(plan.prompt_ids), completion_tokens=len(ids),
            seconds=time.perf_counter() - plan.start, prompt_ids=plan.prompt_ids, completion_ids=ids,
        )

    def reply_for(self, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> ServerReply | None:
        """The server's reply that produced this step (None: the step never reached it)."""
        return self._replies.get((tuple(prompt_ids), tuple(completion_ids)))


__all__ = ["ServerManagerBackend", "ServerReply"]
