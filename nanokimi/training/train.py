"""Training one model: `train(run_config, on_event, should_stop)`.

A function, not a script: it builds the model and optimizer from a `RunConfig`, trains, evaluates
on the comparison's fixed evaluation batches, measures, and returns a `RunResult` with every
metric of results.csv and the tidy history. It reports progress through `on_event(dict)`: a
"phase" event whenever it moves on to another phase (PHASES: loading the corpus, building the
model, evaluating, training, measuring, saving), so a live view can say what it waits for, then
"start", "step", "eval" and "done". It stops within one step once `should_stop()` is true, evaluates
the model at the step where it stopped (its final validation loss is that model's, not the last
scheduled evaluation's), and returns what it measured.

A run ends `diverged` as soon as its loss is not finite or clearly worse than the untrained
model's (`diverged()`: the rule, with its reasons). Whatever happens, nothing measured is lost:
an error in a training step or in the measurements after training ends the run `failed` (a
diverged run stays diverged), with the error in its message and its history complete.

Timing is honest: a step's time covers batch sampling, forward, backward and the optimizer step,
and nothing else; evaluation, inference and generation are timed separately.
"""

import math
import platform
import statistics
import time
from dataclasses import dataclass, field, replace

import torch

from .. import metrics
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 (load_checkpoint: read from here too)
from .data import Corpus, eval_batches, get_batch, load_corpus
from .divergence import DIVERGENCE_WINDOW, divergence_limit, diverged, divergence_message, smoothed_train_loss  # noqa: F401
from .config import ModelConfig, OptimizerConfig, RunConfig  # noqa: F401 (read from here too)
from .model import LanguageModel, generate
from .moe import Routing
from .optim import build_optimizer
from .parallel import BatchThreads, plan
from .qkclip import QK_CLIPS_METRIC, max_logit_metric
from .routing import expert_health
from ..status import COMPLETED, DIVERGED, FAILED, RUNNING, STOPPED

# Evaluation runs many batches per forward pass, this many tokens at a time. On the CPU, chunks
# whose activations stay in cache win: 2,048 tokens evaluated the seed models 1.1-1.2x faster than
# 32,768 (and than one 512-token batch per pass) on a 2-core EPYC; accelerators want big chunks.
EVAL_CHUNK_TOKENS = 32_768
EVAL_CHUNK_TOKENS_CPU = 2_048

# What train() is doing, in order, as its "phase" events name it ("evaluating" and "training" repeat).
PHASES = ("loading", "building", "evaluating", "training", "measuring", "saving")


@dataclass
class RunResult:
    config: RunConfig
    status: str = RUNNING              # COMPLETED | STOPPED | DIVERGED | FAILED (status.py)
    message: str = ""
    results: dict = field(default_factory=dict)   # results.csv row
    history: list = field(default_factory=list)   # tidy rows: model, step, wall_time_s, train_flops, metric, value


def set_threads(threads):
    """Set torch's intra-op threads (0 = all usable cores); returns the number in use."""
    threads = threads or metrics.usable_cores()
    torch.set_num_threads(threads)
    return threads


def evaluate(model, batches, routing=None, threads=None, max_logits=None):
    """Mean loss per split over the fixed evaluation batches, many batches per forward pass.

    With `routing` (a list), the MoE layers' routing on the validation split is appended to it,
    one moe.Routing per layer (gate probabilities (N, E), experts chosen), for the routing
    statistics; with `max_logits` (a list), every layer's largest attention logit per head on the
    validation split, (nh,) per layer. `threads` (a BatchThreads) spreads the forward passes over
    cores; the numbers do not change.
    """
    threads = threads or BatchThreads(1)
    model.eval()

    def chunk(job):
        split, x, y = job
        measured = [] if split == "val" and max_logits is not None else None
        with torch.inference_mode():  # thread-local, so entered in the thread that runs the chunk
            _, loss, gates = model(x, y, return_gates=True, max_logits=measured)  # each chunk's own: nothing shared
            return split, loss.item() * x.size(0), gates if split == "val" and routing is not None else None, measured

    jobs = []
    for split, (x, y) in batches.items():
        chunk_tokens = EVAL_CHUNK_TOKENS_CPU if x.device.type == "cpu" else EVAL_CHUNK_TOKENS
        rows = max(1, chunk_tokens // x.size(1))
        jobs.extend((split, x[i:i + rows], y[i:i + rows]) for i in range(0, x.size(0), rows))
    try:
        done = threads.map(chunk, jobs)
    finally:
        model.train()
    # every batch the same size: the mean of per-batch means
    losses = {split: sum(total for s, total, *_ in done if s == split) / x.size(0) for split, (x, _) in batches.items()}
    if routing is not None:
        parts = [gates for s, _, gates, _ in done if s == "val"]
        routing.extend(Routing(torch.cat([r.probs for r in layer]),  # per layer, the chunks in order
                               None if layer[0].chosen is None else torch.cat([r.chosen for r in layer]))
                       for layer in zip(*parts))
    if max_logits is not None:
        parts = [measured for s, *_, measured in done if s == "val"]
        max_logits.extend(torch.stack(layer).amax(0) for layer in zip(*parts))  # per layer, over the chunks
    return losses


def train_step(model, optimizer, x, y, threads):
    """One optimizer step on the batch (x, y), then, with loss-free balancing, each MoE layer's
    bias nudged by the step's token counts (moe.py); returns the loss as a Python float. An optimizer
    with QK-clip (MuonClip) gets the step's largest attention logits, measured in its forward pass."""
    optimizer.zero_grad(set_to_none=True)
    counts = [] if model.config.bias_rate else None
    max_logits = [] if optimizer.qk_clip is not None else None
    loss = threads.forward_backward(model, x, y, expert_counts=counts, max_logits=max_logits)
    optimizer.step(max_logits)
    for moe, layer_counts in zip(model.moe_layers(), counts or ()):
        moe.nudge_bias(layer_counts)
    return loss.item()  # also waits for the device, so a step's time is complete




def build(run, vocab_size, device, threads=None):
    """The model (initialised from run.seed) and its optimizer, as `run` describes them; `threads`
    (a BatchThreads) is what the optimizer may spread its work over."""
    torch.manual_seed(run.seed)
    model = LanguageModel(replace(run.model, vocab_size=vocab_size)).to(device)
    optimizer = build_optimizer(model, run.optimizer, threads)
    return model, optimizer


def prepare(run, corpus=None, phase=None):
    """Everything a run trains with, set up as `run` says: (threads, device, corpus, batch threads,
    model, optimizer). Sets torch's thread count; checks the corpus fits the block size. `phase(name)`
    is told when it starts loading the corpus and building the model."""
    phase = phase or (lambda name: None)
    threads = set_threads(run.threads)
    device = metrics.resolve_device(run.device)
    phase("loading")
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(run.data)
    corpus.check(run.model.block_size)
    phase("building")
    batch_threads = BatchThreads(plan(threads, device, run.model, run.batch_size))
    model, optimizer = build(run, corpus.vocab_size, device, batch_threads)
    return threads, device, corpus, batch_threads, model, optimizer


def _error_text(err):
    return f"{type(err).__name__}: {err}"


def train(run, on_event=None, should_stop=None, corpus=None):
    """Train one model as `run` says; returns a RunResult (partial if stopped or diverged)."""
    started = time.perf_counter()
    run.validate()
    training = _Training(run, on_event, should_stop)
    threads, device, corpus, batch_threads, model, optimizer = prepare(run, corpus, training.phase)
    training.flops_per_step = run.flops_per_step(corpus.vocab_size)
    evalset = {split: (x.to(device), y.to(device)) for split, (x, y)
               in eval_batches(corpus, run.eval_iters, run.batch_size, run.model.block_size, run.seed).items()}
    training.emit({"event": "start", "model": run.name, "iters": run.iters, "params": model.num_params(),
                   "device": device, "threads": threads})
    try:
        training.loop(model, optimizer, corpus.train_data, evalset, device, batch_threads)
    except Exception as err:  # keep every point measured so far; the message says what went wrong
        training.end(FAILED, f"training stopped by an error after {training.step} steps: {_error_text(err)}")
    results = training.results(model, optimizer, corpus, device, threads, batch_threads)
    results["total_time_s"] = time.perf_counter() - started
    for m in metrics.METRICS:  # whatever was not measured
        results.setdefault(m.name, math.nan)
    results["status"], results["message"] = training.status, training.message
    training.emit({"event": "done", "model": run.name, "status": training.status, "message": training.message,
                   "results": results})
    return RunResult(config=run, status=training.status, message=training.message, results=results,
                     history=training.history)


class _Training:
    """One run as train() goes through its phases: what it has measured so far and how it ended.

    The phases, in order: set-up (prepare), the loop (`loop`: an evaluation every eval_interval
    steps, `evaluate_now`, and training steps between them), and the results (`results`: the
    figures of results.csv, inference and generation speed, the checkpoint)."""

    def __init__(self, run, on_event=None, should_stop=None):
        self.run = run
        self.emit = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.step = 0
        self.clock = 0.0  # training time only, evaluation excluded
        self.flops_per_step = 0  # training FLOPs of one step (RunConfig.flops_per_step), known once the text is
        self.eval_seconds = 0.0
        self.step_ms, self.train_losses, self.val_losses = [], [], []
        self.history = []  # tidy rows: model, step, wall_time_s, train_flops, metric, value
        self.status, self.message = COMPLETED, ""
        self.current_phase = None

    def phase(self, name):
        """A "phase" event when train() moves on to `name` (one of PHASES), at the current step."""
        if name != self.current_phase:
            self.current_phase = name
            self.emit({"event": "phase", "model": self.run.name, "phase": name, "step": self.step,
                       "iters": self.run.iters})

    @property
    def train_flops(self):
        """Training FLOPs so far: every step is one batch of the same size, so steps × FLOPs per step."""
        return self.step * self.flops_per_step

    def record(self, metric, value):
        self.history.append({"model": self.run.name, "step": self.step, "wall_time_s": self.clock,
                             "train_flops": self.train_flops, "metric": metric, "value": value})

    def end(self, status, message):
        """The run ends `status`, saying `message`; True, for a caller that stops here."""
        self.status, self.message = status, message
        return True

    def loop(self, model, optimizer, train_data, evalset, device, batch_threads):
        """Evaluate and train until the last step, a stop or divergence (the status says which)."""
        run, block = self.run, self.run.model.block_size
        batch_gen = torch.Generator().manual_seed(run.seed)
        while True:
            # A stop is evaluated at its own step, so the final validation loss is the stopped model's.
            stopping = self.step < run.iters and self.should_stop()
            if self.step % run.eval_interval == 0 or self.step == run.iters or stopping:
                if self.evaluate_now(model, optimizer, evalset, batch_threads):
                    return
                stopping = stopping or (self.step < run.iters and self.should_stop())  # asked during it: evaluated already
            if self.step == run.iters:
                return
            if stopping:
                self.end(STOPPED, f"stopped by request after {self.step} of {run.iters} steps")
                return

            self.phase("training")
            t0 = time.perf_counter()
            x, y = get_batch(train_data, run.batch_size, block, batch_gen, device)
            loss_value = train_step(model, optimizer, x, y, batch_threads)
            ms = (time.perf_counter() - t0) * 1000
            self.step += 1
            self.step_ms.append(ms)
            self.clock += ms / 1000
            self.train_losses.append(loss_value)
            self.record("train_loss", loss_value)
            self.record("ms_per_step", ms)
            self.emit({"event": "step", "model": run.name, "step": self.step, "iters": run.iters,
                       "wall_time_s": self.clock, "train_flops": self.train_flops, "loss": loss_value, "ms": ms})
            if not math.isfinite(loss_value):
                self.end(DIVERGED, f"training loss became {loss_value} at step {self.step}; the run was stopped")
                return
            smoothed = smoothed_train_loss(self.train_losses)
            if smoothed is not None and diverged(self.val_losses[0], smoothed):
                self.end(DIVERGED, divergence_message("mean training loss", smoothed,
                                                      f"over steps {self.step - DIVERGENCE_WINDOW + 1}-{self.step}",
                                                      self.val_losses[0]))
                return

    def evaluate_now(self, model, optimizer, evalset, batch_threads):
        """Evaluate at the current step and record it (the routing too, for an MoE; the attention's
        largest logits, and QK-clip's head-clips so far); True when the run diverged."""
        run = self.run
        self.phase("evaluating")
        self.current_phase = None  # every evaluation is its own phase: "evaluating (step N)"
        t0 = time.perf_counter()
        routing, max_logits = [], []
        losses = evaluate(model, evalset, routing, batch_threads, max_logits)
        self.eval_seconds += time.perf_counter() - t0
        for layer, (moe, decided) in enumerate(zip(model.moe_layers(), routing)):  # MoE only: routing collapse, dead experts
            for metric, value in expert_health(layer, decided, moe.expert_bias).items():
                self.record(metric, value)
        for layer, maxima in enumerate(max_logits):  # does attention approach QK-clip's threshold?
            self.record(max_logit_metric(layer), maxima.max().item())
        if optimizer.qk_clip is not None:
            self.record(QK_CLIPS_METRIC, optimizer.qk_clip.clipped)
        self.val_losses.append(losses["val"])
        self.record("val_loss", losses["val"])
        self.record("eval_train_loss", losses["train"])
        self.record("rss_mb", metrics.rss_mb())
        if self.step > 0:
            recent = statistics.median(self.step_ms[-run.eval_interval:])
            self.record("tokens_per_s", run.batch_size * run.model.block_size / recent * 1000)
        self.emit({"event": "eval", "model": run.name, "step": self.step, "iters": run.iters,
                   "wall_time_s": self.clock, "train_flops": self.train_flops, "val_loss": losses["val"],
                   "train_loss": losses["train"]})
        if not math.isfinite(losses["val"]):
            return self.end(DIVERGED, f"validation loss became {losses['val']} at step {self.step}")
        if diverged(self.val_losses[0], losses["val"]):
            return self.end(DIVERGED, divergence_message("validation loss", losses["val"], f"at step {self.step}",
                                                         self.val_losses[0]))
        return False

    def results(self, model, optimizer, corpus, device, threads, batch_threads):
        """The results.csv row of the run so far (total time, status and unmeasured figures aside):
        its figures, then inference and generation speed and the checkpoint unless it diverged or
        failed. An error here is kept in the status and message, with what was measured."""
        run, status = self.run, self.status
        results = {"model": run.name, "architecture": model.config.ffn, "optimizer": run.optimizer.name,
                   "seed": run.seed}
        try:
            batch_threads.close()
            results.update({
                "params": model.num_params(), "active_params": model.active_params(),
                "flops_per_token": model.forward_flops(1),
                "best_val_loss": min(self.val_losses) if self.val_losses else math.nan,
                # A diverged model has no final loss worth reporting: the model at the end is blown up
                # (or was last evaluated before it blew up), so report NaN; best_val_loss stays as
                # measured and the status says the run diverged. A run that failed in its loop was last
                # evaluated before its last step.
                "final_val_loss": self.val_losses[-1] if self.val_losses and status not in (DIVERGED, FAILED) else math.nan,
                "train_flops": self.train_flops,
                "steps": self.step, "device": device, "threads": threads, "node": platform.node(),
            })
            results.update(metrics.derived(results["final_val_loss"], results["params"]))
            median_ms = statistics.median(self.step_ms) if self.step_ms else math.nan
            results["train_ms_per_step"] = median_ms
            results["tokens_per_s"] = run.batch_size * run.model.block_size / median_ms * 1000 if self.step_ms else math.nan
            results["eval_time_s"] = self.eval_seconds
            results.update(metrics.memory_breakdown(model, optimizer))
            results["state_mb"] = results["param_mb"] + results["grad_mb"] + results["optimizer_mb"]

            if status not in (DIVERGED, FAILED):
                self.phase("measuring")
                results.update(measure_inference(model, corpus, run, device))
            else:
                results.update(inference_ms=math.nan, gen_chars_per_s=math.nan)
            if run.checkpoint and status != FAILED:
                self.phase("saving")
                save_checkpoint(run.checkpoint, model, corpus, run)
            results["peak_rss_mb"] = metrics.peak_rss_mb()
            results["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / metrics.MB if device.startswith("cuda") else math.nan
        except Exception as err:  # the history is measured already: return it with what went wrong
            failure = f"measuring or saving the model after {self.step} steps failed: {_error_text(err)}"
            self.end(DIVERGED if status == DIVERGED else FAILED,  # a diverged run stays diverged
                     f"{self.message}; {failure}" if self.message else failure)
        results.setdefault("steps", self.step)
        results.setdefault("device", device)
        results.setdefault("threads", threads)
        results.setdefault("node", platform.node())
        results.setdefault("shared_with", "")  # as far as train() knows; worker.run_many names the runs beside it
        return results


def measure_inference(model, corpus, run, device):
    """Median forward latency of one batch, and generation speed in new characters per second."""
    model.eval()
    x, _ = get_batch(corpus.val_data, run.batch_size, model.config.block_size, torch.Generator().manual_seed(run.seed), device)
    with torch.inference_mode():
        inference_ms = metrics.median_time_ms(lambda: model(x), device)
    prompt = torch.tensor(corpus.encode(corpus.text[0]), dtype=torch.long)
    metrics.synchronize(device)
    t0 = time.perf_counter()
    generate(model, prompt, run.gen_chars, generator=torch.Generator().manual_seed(run.seed))
    gen_chars_per_s = run.gen_chars / (time.perf_counter() - t0)
    model.train()
    return {"inference_ms": inference_ms, "gen_chars_per_s": gen_chars_per_s}
