"""The wire format of `rememr1 serve`: OpenAI chat-completion requests, replies, stream
chunks and errors, as pydantic models, and how a request becomes (document, question).

    req = ChatCompletionRequest.model_validate_json(body)    # pydantic.ValidationError if malformed
    document, question = document_and_question(req.messages)  # InputError if there is no question

Only what the server reads is declared; other fields OpenAI clients send (tools,
logprobs, ...) are accepted and ignored. Types are strict: `"stream": "yes"` is an error,
not a guess.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Lenient(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class Message(_Lenient):
    role: Role
    content: str | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class Extension(_Lenient):
    """The `rememr1` field of a request (`extra_body={"rememr1": {"trace": True}}`)."""

    trace: bool = False


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    rememr1: Extension | None = None

    @property
    def wants_trace(self) -> bool:
        return bool(self.rememr1 and self.rememr1.trace)


def _texts(content: str | list[ContentPart] | None, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for k, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise InputError(f"{where}, content part {k}: only text parts are supported, not {part.type!r}")
        out.append(part.text)
    return out


def document_and_question(messages: list[Message]) -> tuple[str, str]:
    """The last message is the user's question (its last text part, when it has several);
    the text of everything before it is the document."""
    last = messages[-1]
    if last.role != "user":
        raise InputError(f"the last message must be the user's question, not a {last.role!r} message")
    parts = _texts(last.content, f"message {len(messages) - 1}")
    if not parts or not parts[-1].strip():
        raise InputError("the question is empty: the last user message has no text")
    earlier = [t for i, m in enumerate(messages[:-1]) for t in _texts(m.content, f"message {i}")]
    document = "\n\n".join(t for t in earlier + parts[:-1] if t.strip())
    if not document:
        raise InputError("the document is empty: put it in the messages before the question "
                         "(or in content parts above it)")
    return document, parts[-1]


# ----------------------------------------------------------------------------- replies


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ReplyMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ReplyMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    rememr1: dict[str, Any] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    rememr1: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rememr1"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorReply(BaseModel):
    error: ErrorBody


__all__ = [
    "ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest", "Choice", "ChunkChoice", "Delta",
    "ErrorBody", "ErrorReply", "Extension", "Message", "ModelCard", "ModelList", "ReplyMessage", "Usage",
    "document_and_question",
]
