"""How the embedded model's worker generates: several blocks decoded together.

One llama.cpp context holds `sequences` sequences, one block in each (llama.cpp's batched
decoding, through llama-cpp-python's low-level API). Each step decodes one token of every
running sequence in a single `llama_decode`, together with the next chunk of the prompts
of blocks that just took a free sequence; a sequence that ends (a stop sequence, the end
of text, max_tokens) frees its place for the next block waiting. On a CPU one step over
8 sequences costs little more than a step over one: the weights are read once per step.

A block's answer depends only on its own request: each sequence samples with a chain of
its own, seeded from the request (the seed, then the next one for a short continuation's
retry, see local.Attempts), and each sequence attends only to its own part of the
context. Which blocks share a step does not change it (tests/integration/test_batched.py)
up to 4 sequences: settings.MAX_SEQUENCES says why not beyond.

What is not decoded here goes through `ModelRunner` as before, one request at a time
between steps: chat requests (the chat template and its stops are llama-cpp-python's)
and requests with sampling options this engine does not know (mirostat, logit_bias...).
A model that is not a llama_cpp.Llama (a test's fake) is run that way too (`OneAtATime`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from trinity.llm.providers.base import sampling
from trinity.llm.providers.local import Attempts, ModelRunner, json_gbnf
from trinity.llm.types import LLMRequest, LLMResponse
from trinity.messages import one_line

# The most tokens one llama_decode carries (n_batch, and n_ubatch: one compute pass).
# Prompts longer than what is left of it are fed in chunks over several steps.
BATCH_TOKENS = 512


@dataclass(frozen=True)
class Outcome:
    """A finished request: its answer or what went wrong, and how long it waited for a place."""

    ident: int
    response: LLMResponse | None = None
    error: str | None = None
    waited: float = 0.0


class Engine(Protocol):
    """What the worker's loop drives: requests in, outcomes out, a step at a time."""

    @property
    def busy(self) -> bool: ...
    def submit(self, ident: int, request: LLMRequest) -> None: ...
    def cancel(self, ident: int) -> None: ...
    def step(self) -> list[Outcome]: ...
    def close(self) -> None: ...


@dataclass
class _Job:
    ident: int
    request: LLMRequest
    received: float
    attempts: Attempts
    started: float | None = None

    def waited(self) -> float:
        return max(0.0, (self.started or self.received) - self.received)


class OneAtATime:
    """Each request in turn through ModelRunner (create_completion): what is not batched."""

    def __init__(self, runner: ModelRunner, clock: Callable[[], float] = time.monotonic) -> None:
        self.runner = runner
        self.clock = clock
        self._queue: deque[_Job] = deque()

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def submit(self, ident: int, request: LLMRequest) -> None:
        self._queue.append(_Job(ident, request, self.clock(), Attempts.of(request)))

    def cancel(self, ident: int) -> None:
        self.drop(ident)

    def drop(self, ident: int) -> bool:
        """Drop a request that has not started; whether it was here."""
        for job in self._queue:
            if job.ident == ident:
                self._queue.remove(job)
                return True
        return False

    def step(self) -> list[Outcome]:
        if not self._queue:
            return []
        job = self._queue.popleft()
        job.started = self.clock()
        try:
            response = self.runner.generate(job.request)
        except Exception as exc:  # the request's own failure, not the worker's
            return [Outcome(job.ident, error=one_line(exc), waited=job.waited())]
        return [Outcome(job.ident, response=response, waited=job.waited())]

    def close(self) -> None:
        self._queue.clear()


def engine_for(runner: ModelRunner) -> Engine:
    """The batched engine for a llama_cpp.Llama (the model is loaded here), else one
    request at a time."""
    model = runner.load()
    try:
        from llama_cpp import Llama
    except ImportError:
        return OneAtATime(runner)
    if isinstance(model, Llama):
        return BatchedEngine(model, runner)
    return OneAtATime(runner)


# ---------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SamplerSpec:
    """How one sequence samples: create_completion's parameters and defaults."""

    temperature: float
    max_tokens: int
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    grammar: str | None = None  # GBNF with a `root` rule

    @classmethod
    def of(cls, request: LLMRequest) -> SamplerSpec | None:
        """The spec for a completion request; None when it needs create_completion."""
        params = sampling(request)
        params.pop("seed", None)  # the sequence's own chain is seeded (Attempts)
        # A request with an option the spec does not hold (mirostat, logit_bias...) goes
        # to create_completion, which knows them all.
        if request.document is None or not set(params) <= _SAMPLED_WITH:
            return None
        ints = {"max_tokens", "top_k"}
        values = {name: int(v) if name in ints else float(v) for name, v in params.items()}
        grammar = json_gbnf(request) if request.response_format == "json" else None
        return cls(**values, grammar=grammar)  # type: ignore[arg-type]


# What a batched sequence samples with: the spec's fields but the grammar (not an option).
_SAMPLED_WITH = frozenset(f.name for f in fields(SamplerSpec)) - {"grammar"}


class _Llama:
    """The llama.cpp calls of the batched engine, in one place (llama_cpp's ctypes API)."""

    def __init__(self, model: Any, sequences: int, context: int, threads: int) -> None:
        import llama_cpp

        self.api = llama_cpp
        self.model = model  # tokenizes and detokenizes (its vocabulary is the same)
        self.weights = self._unpacked_weights(str(model.model_path))
        self.vocab = llama_cpp.llama_model_get_vocab(self.weights)
        self.n_vocab = model.n_vocab()
        params = llama_cpp.llama_context_default_params()
        # Unified off: each sequence has a KV cache of its own, `context` tokens long (one
        # cache shared by all was slower here), and attends only to its own tokens.
        params.kv_unified = False
        params.n_seq_max = sequences
        params.n_ctx = sequences * context
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        # A step over several sequences is a multi-token decode: llama.cpp runs it on
        # n_threads_batch, not n_threads; both get the setting.
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.weights, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not make a context for batched decoding")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.context = llama_cpp.llama_n_ctx_seq(self.ctx)
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.size = 0

    def _unpacked_weights(self, path: str) -> Any:
        """The model's weights as the file has them, not repacked for this CPU.

        llama.cpp repacks Q4_K weights for AVX2 and multiplies them four tokens at a time,
        the rest one by one, with sums rounded differently: which way a sequence's token
        went would depend on how many others shared its step, and so would its answer
        (measured: 5 of 12 answers changed). Unpacked, every token is multiplied alike.
        Loaded memory-mapped, they add no second copy of the file to memory.
        """
        api = self.api
        params = api.llama_model_default_params()
        params.use_extra_bufts = False
        weights = api.llama_model_load_from_file(path.encode(), params)
        if not weights:
            raise RuntimeError(f"llama.cpp could not load {path} for batched decoding")
        return weights

    def tokenize(self, text: str) -> list[int]:
        # As create_completion: special tokens parsed, BOS (and EOS) as the vocabulary says.
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def detokenize(self, tokens: list[int], prompt: list[int]) -> bytes:
        return bytes(self.model.detokenize(tokens, prev_tokens=prompt))

    def is_end(self, token: int) -> bool:
        return bool(self.api.llama_vocab_is_eog(self.vocab, token))

    def sampler(self, spec: SamplerSpec, seed: int) -> Any:
        """A sampler chain for one sequence: create_completion's, but top-k first.

        create_completion applies the repeat penalty to all 262k logits and then keeps the
        top 40; here, when sampling, the top 40 are kept first and only they are penalised,
        which costs a fraction and picks among the same candidates but for tokens a penalty
        would have lifted into them (BENCH_NOTES.md). Greedy decoding keeps the penalty over
        every logit. A grammar comes first, over the whole vocabulary: after top-k it could
        reject every candidate left.
        """
        api = self.api
        chain = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            api.llama_sampler_chain_add(chain, sampler)

        if spec.grammar is not None:
            grammar = api.llama_sampler_init_grammar(self.vocab, spec.grammar.encode(), b"root")
            if not grammar:
                api.llama_sampler_free(chain)
                raise ValueError("llama.cpp could not parse the JSON grammar")
            add(grammar)
        if spec.temperature > 0:
            add(api.llama_sampler_init_top_k(spec.top_k))
        add(
            api.llama_sampler_init_penalties(
                self.n_vocab,
                self.model.last_n_tokens_size,
                spec.repeat_penalty,
                spec.frequency_penalty,
                spec.presence_penalty,
            )
        )
        if spec.temperature == 0:
            add(api.llama_sampler_init_greedy())
        elif spec.temperature < 0:
            add(api.llama_sampler_init_dist(seed))
        else:
            add(api.llama_sampler_init_typical(spec.typical_p, 1))
            add(api.llama_sampler_init_top_p(spec.top_p, 1))
            add(api.llama_sampler_init_min_p(spec.min_p, 1))
            add(api.llama_sampler_init_temp(spec.temperature))
            add(api.llama_sampler_init_dist(seed))
        return chain

    def sample(self, sampler: Any, index: int) -> int:
        """The next token from the logits at `index` of the last batch (accepted into the
        chain: its penalty window and grammar move on)."""
        return int(self.api.llama_sampler_sample(sampler, self.ctx, index))

    def free_sampler(self, sampler: Any) -> None:
        self.api.llama_sampler_free(sampler)

    def forget(self, sequence: int) -> None:
        """Empty a sequence's KV cache, for the next block to use it."""
        self.api.llama_memory_seq_rm(self.memory, sequence, -1, -1)

    def add(self, token: int, position: int, sequence: int, logits: bool) -> int:
        """Add a token to the next batch; its index there."""
        batch, index = self.batch, self.size
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = sequence
        batch.logits[index] = logits
        self.size += 1
        return index

    def close(self) -> None:
        api = self.api
        api.llama_batch_free(self.batch)
        api.llama_free(self.ctx)
        api.llama_model_free(self.weights)

    def decode(self) -> None:
        self.batch.n_tokens = self.size
        status = self.api.llama_decode(self.ctx, self.batch)
        self.size = 0
        if status != 0:
            raise RuntimeError(f"llama_decode failed (status {status})")


@dataclass(eq=False)
class _Sequence:
    """One place in the context, holding one attempt of one job."""

    number: int
    job: _Job
    spec: SamplerSpec
    sampler: Any
    prompt: list[int]
    max_tokens: int
    fed: int = 0  # prompt tokens decoded so far
    tokens: list[int] = field(default_factory=list)  # the continuation
    next_token: int | None = None  # sampled, to be decoded in the next step
    logits_at: int | None = None  # where its logits are in the batch just decoded


class BatchedEngine:
    """Decodes up to `sequences` completion requests together in one llama.cpp context."""

    def __init__(
        self, model: Any, runner: ModelRunner, clock: Callable[[], float] = time.monotonic
    ) -> None:
        settings = runner.settings
        sequences = settings.sequences
        threads = settings.threads or os.cpu_count() or 1
        self.llama = _Llama(model, sequences, settings.context, threads)
        self.model_name = str(model.model_path)
        self.clock = clock
        self.solo = OneAtATime(runner, clock)
        self._free = list(range(sequences))
        self._running: dict[int, _Sequence] = {}  # by job ident
        self._waiting: deque[tuple[_Job, SamplerSpec]] = deque()

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting or self.solo.busy)

    def submit(self, ident: int, request: LLMRequest) -> None:
        try:
            spec = SamplerSpec.of(request)
        except Exception:  # a bad option or schema: create_completion says what is wrong
            spec = None
        if spec is None:
            self.solo.submit(ident, request)
            return
        self._waiting.append((_Job(ident, request, self.clock(), Attempts.of(request)), spec))

    def cancel(self, ident: int) -> None:
        if self.solo.drop(ident):
            return
        for entry in self._waiting:
            if entry[0].ident == ident:
                self._waiting.remove(entry)
                return
        sequence = self._running.get(ident)
        if sequence is not None:
            self._release(sequence)

    def step(self) -> list[Outcome]:
        """Run one request that is not batched, if any; start the blocks waiting for a free
        sequence (their prompts); then decode the next token of every running sequence."""
        outcomes = self.solo.step()
        outcomes.extend(self._admit())
        try:
            for sequence in [s for s in self._running.values() if s.fed < len(s.prompt)]:
                self._feed_prompt(sequence)
                outcomes.extend(self._sampled([sequence]))
            if self._running:
                outcomes.extend(self._sampled(self._feed_tokens()))
        except RuntimeError as exc:
            outcomes.extend(self._fail_running(one_line(exc)))
        return outcomes

    def close(self) -> None:
        """Free what llama.cpp holds for us (requests still running are dropped)."""
        for sequence in list(self._running.values()):
            self._release(sequence)
        self._waiting.clear()
        self.solo.close()
        self.llama.close()

    # ------------------------------------------------------------------ internals

    def _admit(self) -> list[Outcome]:
        """Give waiting jobs the free sequences; a job that cannot run fails here."""
        failed = []
        while self._free and self._waiting:
            job, spec = self._waiting.popleft()
            try:
                self._start(job, spec)
            except (RuntimeError, ValueError) as exc:
                failed.append(Outcome(job.ident, error=one_line(exc), waited=job.waited()))
        return failed

    def _start(self, job: _Job, spec: SamplerSpec) -> None:
        assert job.request.document is not None
        prompt = self.llama.tokenize(job.request.document)
        room = self.llama.context - len(prompt)
        if room <= 0:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens, more than the context of "
                f"{self.llama.context} (llm.context)"
            )
        number = min(self._free)  # the lowest: the running sequences stay consecutive
        self._free.remove(number)
        self.llama.forget(number)
        if job.started is None:
            job.started = self.clock()
        sampler = self.llama.sampler(spec, job.attempts.seed)
        max_tokens = min(spec.max_tokens, room) if spec.max_tokens > 0 else room
        self._running[job.ident] = _Sequence(number, job, spec, sampler, prompt, max_tokens)

    def _feed_prompt(self, sequence: _Sequence) -> None:
        """Decode a new sequence's prompt in a call of its own, as it would be alone.

        Decoded with other sequences' tokens, its first token would be computed apart from
        the rest (llama.cpp splits a batch into equal shares of each sequence), and the
        attention over a single token sums differently from that over many: the answer
        would depend on the blocks running beside it (measured: 1 of 12 changed).
        """
        while sequence.fed < len(sequence.prompt):
            end = min(len(sequence.prompt), sequence.fed + BATCH_TOKENS)
            for position in range(sequence.fed, end):
                last = position == len(sequence.prompt) - 1
                index = self.llama.add(sequence.prompt[position], position, sequence.number, last)
                if last:
                    sequence.logits_at = index
            sequence.fed = end
            self.llama.decode()

    def _feed_tokens(self) -> list[_Sequence]:
        """Decode the token each running sequence sampled last, in one call; those sequences.

        In the order of the sequences' numbers: llama.cpp computes a run of consecutive
        sequences together and starts over at each gap or step back (measured: eight
        sequences in reverse order made a step five times slower).
        """
        fed = sorted(
            (s for s in self._running.values() if s.next_token is not None),
            key=lambda sequence: sequence.number,
        )
        for sequence in fed:
            assert sequence.next_token is not None
            # It follows the prompt and the tokens before it (it is in `tokens` already).
            position = len(sequence.prompt) + len(sequence.tokens) - 1
            sequence.logits_at = self.llama.add(
                sequence.next_token, position, sequence.number, True
            )
            sequence.next_token = None
        if fed:
            self.llama.decode()
        return fed

    def _sampled(self, decoded: list[_Sequence]) -> list[Outcome]:
        """Sample the next token of each sequence just decoded; the blocks that are done."""
        outcomes = []
        for sequence in decoded:
            outcome = self._advance(sequence)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _advance(self, sequence: _Sequence) -> Outcome | None:
        """Sample a sequence's next token; when it is done, its outcome (or a retry)."""
        assert sequence.logits_at is not None
        token = self.llama.sample(sequence.sampler, sequence.logits_at)
        ended = _Ending.after(self.llama, sequence, token)
        if ended is None:
            sequence.tokens.append(token)
            sequence.next_token = token
            return None
        job = sequence.job
        self._release(sequence)
        job.attempts.record(
            ended.text,
            ended.finish_reason,
            prompt_tokens=len(sequence.prompt),
            completion_tokens=ended.tokens,
        )
        if not job.attempts.done:
            # The retry goes first in line: the block has waited its turn already.
            self._waiting.appendleft((job, sequence.spec))
            return None
        response = job.attempts.response(self.model_name)
        return Outcome(job.ident, response=response, waited=job.waited())

    def _release(self, sequence: _Sequence) -> None:
        del self._running[sequence.job.ident]
        self.llama.free_sampler(sequence.sampler)
        self.llama.forget(sequence.number)
        self._free.append(sequence.number)

    def _fail_running(self, error: str) -> list[Outcome]:
        """A decode that failed fails the blocks in it; the context is emptied for the rest."""
        failed = []
        for sequence in list(self._running.values()):
            self._release(sequence)
            failed.append(Outcome(sequence.job.ident, error=error, waited=sequence.job.waited()))
        return failed


@dataclass(frozen=True)
class _Ending:
    """How a sequence ended: its text, why, and how many tokens it generated."""

    text: str
    finish_reason: str
    tokens: int

    @classmethod
    def after(cls, llama: _Llama, sequence: _Sequence, token: int) -> _Ending | None:
        """Whether `token` ends the sequence, as create_completion decides it: the end of
        text, then the first of the request's stop sequences that the text contains,
        then max_tokens. None when it goes on."""
        if llama.is_end(token):
            text = llama.detokenize(sequence.tokens, sequence.prompt)
            return cls(_text(text), "stop", len(sequence.tokens))
        tokens = [*sequence.tokens, token]
        text = llama.detokenize(tokens, sequence.prompt)
        if not _ends_inside_a_character(text):
            for stop in _stops(sequence):
                if stop in text:
                    return cls(_text(text[: text.index(stop)]), "stop", len(tokens))
        if len(tokens) >= sequence.max_tokens:
            return cls(_text(text), "length", len(tokens))
        return None


def _stops(sequence: _Sequence) -> Iterator[bytes]:
    # A JSON request is held by its grammar instead (as on the create_completion path).
    if sequence.spec.grammar is None:
        for stop in sequence.job.request.stop:
            yield stop.encode("utf-8")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="ignore")


def _ends_inside_a_character(data: bytes) -> bool:
    """Whether the last bytes start a UTF-8 character that the next token completes."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): how long is its character?
            length = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
            return length > back
    return False


__all__ = ["BATCH_TOKENS", "BatchedEngine", "Engine", "OneAtATime", "Outcome", "engine_for"]
