"""RL rollouts on llama.cpp: the LoRA adapter being trained, exported to GGUF every step.

    rememr1 train --config revhop-smollm2-cpu --set model.lora=true --set rollout.engine=llamacpp

On a CPU, sampling rollouts with the torch policy is most of an RL step (about 5 tokens/s
on two cores for the built-in model, against ~100 for llama.cpp). With `rollout.engine:
llamacpp` the trainer keeps its torch policy for scoring and the update, and before each
step's rollouts writes the current adapter as a GGUF LoRA file (`backends.gguf_lora`) and
loads it on the base model's GGUF in a fresh llama.cpp backend that returns token ids.
The episodes still go through `Agent.run_iter`, so rollouts see the same prompts, parsing
and state transitions as with the hf engine.

What this costs in exactness, and why it is small:
- The policy that samples is the GGUF base plus a float16 copy of the adapter; the policy
  that is trained is the torch base plus the float32 adapter. For the built-in model the
  torch base *is* the GGUF's weights dequantised (`backends.builtin`), so the two differ
  only by float16 rounding of the adapter and kernel arithmetic. The trainer recomputes
  every log-prob with torch, so the PPO ratio and the KL are exact for what it trains;
  the samples are very slightly off-policy.
- Prompts are tokenized by llama.cpp; the trainer refuses to start when its tokenizer
  disagrees with the GGUF vocabulary on a probe prompt.

Limits: LoRA runs only (a whole-model update would need re-quantising every step) and one
process (no distributed run). `rollout.engine_model` names the base GGUF; left empty it is
the built-in model's, for runs on the built-in base.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..agent import Agent, AgentConfig
from ..errors import InputError
from .rollout import RolloutConfig, rollout_agent

# KV cells of one parallel-decoding context at most (3 GB for the built-in model's f16 cache).
MAX_KV_CELLS = 131072

_PROBE = ({"role": "system", "content": "You read documents."},
          {"role": "user", "content": "Probe: café, 1,234 tokens — <update>x</update> \\boxed{y}"})


class GGUFRollouts:
    """The llama.cpp side of a LoRA run: `agent()` exports the live adapter and returns an
    Agent on it; `close()` frees the llama.cpp instances (between steps, so their threads
    do not compete with the torch update)."""

    def __init__(self, model, tokenizer, rollout: RolloutConfig, agent: AgentConfig, *, seed: int,
                 work_dir: str | Path):
        from ..backends.adapters import BUILTIN_BASE

        peft_cfg = getattr(model, "peft_config", {}).get("default")
        if peft_cfg is None:
            raise InputError("rollout.engine=llamacpp needs a LoRA run (model.lora: true): a whole-model "
                             "update would have to be re-quantised to GGUF every step")
        if rollout.engine_model:
            base = Path(rollout.engine_model).expanduser()
            if not base.is_file():
                raise InputError(f"rollout.engine_model: no such GGUF file: {base}")
        elif peft_cfg.base_model_name_or_path == BUILTIN_BASE:
            from ..backends.builtin import builtin_gguf_path

            base = builtin_gguf_path()
        else:
            raise InputError("rollout.engine=llamacpp on a base other than the built-in model needs "
                             "rollout.engine_model: the base model's GGUF file")
        self.model, self.tokenizer, self.base = model, tokenizer, base
        self.rollout, self.agent_config, self.seed = rollout, agent, seed
        self.work_dir = Path(work_dir)
        self.backend = None
        self._checked = False
        self.gguf_path = self.work_dir / "rollout-adapter.gguf"

    def agent(self) -> Agent:
        """An Agent whose backend samples with the adapter as it is now."""
        from ..backends.gguf_lora import write_gguf_lora
        from ..backends.llamacpp import LlamaCppBackend

        self.close()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.work_dir, prefix=".adapter."))
        try:
            self.model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
            write_gguf_lora(tmp, self.gguf_path, base_gguf=self.base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.backend = LlamaCppBackend(self.base, adapter=self.gguf_path, token_ids=True,
                                       concurrency=self.rollout.engine_concurrency,
                                       parallel=self.slots(), seq_tokens=self.seq_tokens())
        if not self._checked:
            self._check_vocabulary()
            self._checked = True
        return rollout_agent(self.backend, self.rollout, self.agent_config, seed=self.seed)

    def slots(self) -> int:
        """Rollouts decoded together: `engine_parallel`, at most the step's G x B episodes,
        and at most what fits MAX_KV_CELLS cells of `seq_tokens` each."""
        r = self.rollout
        return max(1, min(r.engine_parallel, r.group_size * r.batch_size, MAX_KV_CELLS // self.seq_tokens()))

    def seq_tokens(self) -> int:
        """KV cells per rollout for parallel decoding: the longest prompt an agent step can
        build (a chunk, the memory and a recalled memory of up to `max_new_tokens` each,
        the question and the template) plus the reply, rounded up to 256."""
        from ..chunking import DEFAULT_CHUNK_SIZE

        chunk = self.agent_config.chunk_size or DEFAULT_CHUNK_SIZE
        need = chunk + 3 * self.rollout.sampling.max_new_tokens + 768
        return -(-need // 256) * 256

    def _check_vocabulary(self) -> None:
        from ..backends.base import ChatRequest
        from ..backends.hf import chat_prompt_ids

        ours = chat_prompt_ids(self.tokenizer, _PROBE)
        theirs = self.backend.prompt_ids(ChatRequest(messages=_PROBE))
        if list(ours) != list(theirs):
            self.close()
            raise InputError(f"rollout.engine=llamacpp: {self.base.name} tokenizes a chat prompt "
                             "differently from the policy's tokenizer; use the GGUF of the same model")

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


__all__ = ["GGUFRollouts"]
