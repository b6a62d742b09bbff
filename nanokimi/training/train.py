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

import dataclasses
import math
import platform
import statistics
import time
from dataclasses import dataclass, field, replace

import torch

from .. import metrics
from .data import Corpus, eval_batches, get_batch, load_corpus
from .model import LanguageModel, ModelConfig, generate
from .optim import OptimizerConfig, build_optimizer
from .parallel import BatchThreads, plan
from .routing import entropy_metric, gate_statistics, load_metric
from ..settings import Problems, setting
from ..status import COMPLETED, DIVERGED, FAILED, RUNNING, STOPPED

# Evaluation runs many batches per forward pass, this many tokens at a time. On the CPU, chunks
# whose activations stay in cache win: 2,048 tokens evaluated the seed models 1.1-1.2x faster than
# 32,768 (and than one 512-token batch per pass) on a 2-core EPYC; accelerators want big chunks.
EVAL_CHUNK_TOKENS = 32_768
EVAL_CHUNK_TOKENS_CPU = 2_048

# What train() is doing, in order, as its "phase" events name it ("evaluating" and "training" repeat).
PHASES = ("loading", "building", "evaluating", "training", "measuring", "saving")


@dataclass
class RunConfig:
    name: str = "NanoGPT"              # the model's name in reports and the store; unique within a stored run
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    architecture: str = ""             # the named architecture the model was built as (arms.ARCHITECTURES)
    iters: int = setting(10_000, "training steps per model (seed: 10000)")
    eval_interval: int = setting(100, "evaluate every N steps (seed: 100)")
    eval_iters: int = setting(200, "batches per split in every evaluation (seed: 200)")
    batch_size: int = setting(16, "sequences per batch (seed: 16)")
    seed: int = setting(1337, "torch seed for initialisation and batches (seed: 1337)")
    data: str = "input.txt"            # a path, or "builtin" (see data.resolve_source for the other keys)
    device: str = setting("auto", "auto (default: cuda, else mps, else cpu), cpu, cuda or mps")
    threads: int = setting(0, "threads per training process (default 0: every core this process may use); "
                              "on the CPU each batch is split over them, see README 'Batch threads'")
    gen_chars: int = 200               # characters sampled to measure generation speed
    checkpoint: str | None = None      # where to save the trained weights, if anywhere

    def validate(self):
        """Raise SettingError naming every setting (of the run, its model and its optimizer) that cannot train."""
        problems = Problems()
        problems.extend_from(self.model.validate)
        problems.finite(self.model)  # aux_loss < 0 lets nan and inf through
        problems.extend_from(self.optimizer.validate)
        problems.at_least(self, 1, "iters", "eval_interval", "eval_iters", "batch_size")
        problems.at_least(self, 0, "threads")
        problems.finite(self)
        problems.check_choices(self)
        problems.raise_any()
        return self

    @property
    def arm(self):
        """A grid's arm: its architecture and optimizer ("nanokimi+truemuon"); "" when built directly."""
        return f"{self.architecture}+{self.optimizer.name}" if self.architecture else ""

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """A RunConfig from to_dict(), or from a run stored before OptimizerConfig existed (its
        optimizer settings were fields of the run)."""
        d = dict(d)
        d.pop("arm", None)  # briefly a field; now derived from the architecture
        d["model"] = ModelConfig(**d["model"])
        if isinstance(d.get("optimizer", "adamw"), str):
            settings = {f.name for f in dataclasses.fields(OptimizerConfig)} - {"name"}
            legacy = {k: d.pop(k) for k in list(d) if k in settings}
            d["optimizer"] = OptimizerConfig(name=d.pop("optimizer", "adamw"), **legacy)
        else:
            d["optimizer"] = OptimizerConfig(**d["optimizer"])
        return cls(**d)


@dataclass
class RunResult:
    config: RunConfig
    status: str = RUNNING              # COMPLETED | STOPPED | DIVERGED | FAILED (status.py)
    message: str = ""
    results: dict = field(default_factory=dict)   # results.csv row
    history: list = field(default_factory=list)   # tidy rows: model, step, wall_time_s, metric, value


def set_threads(threads):
    """Set torch's intra-op threads (0 = all usable cores); returns the number in use."""
    threads = threads or metrics.usable_cores()
    torch.set_num_threads(threads)
    return threads


def evaluate(model, batches, gate_probs=None, threads=None):
    """Mean loss per split over the fixed evaluation batches, many batches per forward pass.

    With `gate_probs` (a list), the MoE layers' gate probabilities on the validation split are
    appended to it, one (N, E) tensor per layer, for the routing statistics. `threads`
    (a BatchThreads) spreads the forward passes over cores; the numbers do not change.
    """
    threads = threads or BatchThreads(1)
    model.eval()

    def chunk(job):
        split, x, y = job
        with torch.inference_mode():  # thread-local, so entered in the thread that runs the chunk
            _, loss, gates = model(x, y, return_gates=True)  # each chunk's own: nothing shared between threads
            return split, loss.item() * x.size(0), gates if split == "val" and gate_probs is not None else None

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
    losses = {split: sum(total for s, total, _ in done if s == split) / x.size(0) for split, (x, _) in batches.items()}
    if gate_probs is not None:
        parts = [gates for s, _, gates in done if s == "val"]
        gate_probs.extend(torch.cat(layer) for layer in zip(*parts))  # per layer, the chunks in order
    return losses


def train_step(model, optimizer, x, y, threads):
    """One optimizer step on the batch (x, y); returns the loss as a Python float."""
    optimizer.zero_grad(set_to_none=True)
    loss = threads.forward_backward(model, x, y)
    optimizer.step()
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


# Divergence: besides a loss that stops being finite, a loss that stays finite but is clearly worse
# than the untrained model's. A learning-rate sweep hits this on purpose: learning rate 10 took the
# quick preset's validation losses from 4.6 to between 250 and 3,700 nats, finite all along.
DIVERGENCE_WINDOW = 50  # training steps whose mean loss is watched between evaluations


def divergence_limit(untrained_loss):
    """The loss above which a run has diverged: the untrained model's loss + max(1 nat, half of it).

    `untrained_loss` is the validation loss measured at step 0. An untrained char model predicts
    about uniformly, so that is roughly ln(vocab): 4.2-4.7 nats on Tiny Shakespeare, a limit near
    7. Training only ever has to lower it; a model half as bad again as no training at all is not
    learning slowly, it has blown up. The 1-nat floor keeps the margin clear for tiny vocabularies,
    whose untrained loss is small.
    """
    return untrained_loss + max(1.0, 0.5 * untrained_loss)


def diverged(untrained_loss, loss):
    """True when `loss` shows a diverged run: not finite, or above divergence_limit(untrained_loss).

    `loss` is a validation loss, or smoothed_train_loss() of the training losses: one noisy batch
    must not end a run, a window of them far above the limit does.
    """
    return not math.isfinite(loss) or loss > divergence_limit(untrained_loss)


def smoothed_train_loss(train_losses, window=DIVERGENCE_WINDOW):
    """Mean of the last `window` training losses; None until there are that many."""
    return statistics.fmean(train_losses[-window:]) if len(train_losses) >= window else None


def _loss_text(loss):
    return f"{loss:,.2f}" if abs(loss) < 1e6 else f"{loss:.3g}"


def _divergence_message(what, loss, when, untrained_loss):
    """E.g. 'validation loss 1,900.30 at step 200 is above 6.98, far worse than the untrained model's 4.65: ...'."""
    return (f"{what} {_loss_text(loss)} {when} is above {_loss_text(divergence_limit(untrained_loss))}, far worse "
            f"than the untrained model's {_loss_text(untrained_loss)}: the run diverged")


def _error_text(err):
    return f"{type(err).__name__}: {err}"


def train(run, on_event=None, should_stop=None, corpus=None):
    """Train one model as `run` says; returns a RunResult (partial if stopped or diverged)."""
    started = time.perf_counter()
    run.validate()
    emit = on_event or (lambda event: None)
    should_stop = should_stop or (lambda: False)
    step = 0
    current = [None]

    def phase(name):
        """A "phase" event when train() moves on to `name` (one of PHASES), at the current step."""
        if name != current[0]:
            current[0] = name
            emit({"event": "phase", "model": run.name, "phase": name, "step": step, "iters": run.iters})

    threads, device, corpus, batch_threads, model, optimizer = prepare(run, corpus, phase)
    block = run.model.block_size
    config = model.config
    batch_gen = torch.Generator().manual_seed(run.seed)
    evalset = {split: (x.to(device), y.to(device))
               for split, (x, y) in eval_batches(corpus, run.eval_iters, run.batch_size, block, run.seed).items()}
    train_data = corpus.train_data

    result = RunResult(config=run)
    history = result.history

    def record(step, clock, metric, value):
        history.append({"model": run.name, "step": step, "wall_time_s": clock, "metric": metric, "value": value})

    step_ms, val_losses = [], []
    eval_seconds, clock = 0.0, 0.0  # clock: training time only, evaluation excluded
    emit({"event": "start", "model": run.name, "iters": run.iters, "params": model.num_params(),
          "device": device, "threads": threads})
    status, message = COMPLETED, ""
    train_losses = []
    try:
        while True:
            # A stop is evaluated at its own step, so the final validation loss is the stopped model's.
            stopping = step < run.iters and should_stop()
            if step % run.eval_interval == 0 or step == run.iters or stopping:
                phase("evaluating")
                current[0] = None  # every evaluation is its own phase: "evaluating (step N)"
                t0 = time.perf_counter()
                gate_probs = []
                losses = evaluate(model, evalset, gate_probs, batch_threads)
                eval_seconds += time.perf_counter() - t0
                for layer, probs in enumerate(gate_probs):  # MoE only: watch for routing collapse
                    entropy, load = gate_statistics(probs, config.top_k)
                    record(step, clock, entropy_metric(layer), entropy)
                    for expert, share in enumerate(load):
                        record(step, clock, load_metric(layer, expert), share)
                val_losses.append(losses["val"])
                record(step, clock, "val_loss", losses["val"])
                record(step, clock, "eval_train_loss", losses["train"])
                record(step, clock, "rss_mb", metrics.rss_mb())
                if step > 0:
                    recent = statistics.median(step_ms[-run.eval_interval:])
                    record(step, clock, "tokens_per_s", run.batch_size * block / recent * 1000)
                emit({"event": "eval", "model": run.name, "step": step, "iters": run.iters, "wall_time_s": clock,
                      "val_loss": losses["val"], "train_loss": losses["train"]})
                if not math.isfinite(losses["val"]):
                    status, message = DIVERGED, f"validation loss became {losses['val']} at step {step}"
                    break
                if diverged(val_losses[0], losses["val"]):
                    status, message = DIVERGED, _divergence_message("validation loss", losses["val"], f"at step {step}", val_losses[0])
                    break
                stopping = stopping or (step < run.iters and should_stop())  # asked during it: evaluated already
            if step == run.iters:
                break
            if stopping:
                status, message = STOPPED, f"stopped by request after {step} of {run.iters} steps"
                break

            phase("training")
            t0 = time.perf_counter()
            x, y = get_batch(train_data, run.batch_size, block, batch_gen, device)
            loss_value = train_step(model, optimizer, x, y, batch_threads)
            ms = (time.perf_counter() - t0) * 1000
            step += 1
            step_ms.append(ms)
            clock += ms / 1000
            train_losses.append(loss_value)
            record(step, clock, "train_loss", loss_value)
            record(step, clock, "ms_per_step", ms)
            emit({"event": "step", "model": run.name, "step": step, "iters": run.iters, "wall_time_s": clock,
                  "loss": loss_value, "ms": ms})
            if not math.isfinite(loss_value):
                status, message = DIVERGED, f"training loss became {loss_value} at step {step}; the run was stopped"
                break
            smoothed = smoothed_train_loss(train_losses)
            if smoothed is not None and diverged(val_losses[0], smoothed):
                status, message = DIVERGED, _divergence_message(
                    "mean training loss", smoothed, f"over steps {step - DIVERGENCE_WINDOW + 1}-{step}", val_losses[0])
                break
    except Exception as err:  # keep every point measured so far; the message says what went wrong
        status, message = FAILED, f"training stopped by an error after {step} steps: {_error_text(err)}"

    results = {"model": run.name, "architecture": config.ffn, "optimizer": run.optimizer.name, "seed": run.seed}
    try:
        batch_threads.close()
        results.update({
            "params": model.num_params(), "active_params": model.active_params(),
            "flops_per_token": model.forward_flops(1),
            "best_val_loss": min(val_losses) if val_losses else math.nan,
            # A diverged model has no final loss worth reporting: the model at the end is blown up
            # (or was last evaluated before it blew up), so report NaN; best_val_loss stays as
            # measured and the status says the run diverged. A run that failed in its loop was last
            # evaluated before its last step.
            "final_val_loss": val_losses[-1] if val_losses and status not in (DIVERGED, FAILED) else math.nan,
            "steps": step, "device": device, "threads": threads, "node": platform.node(),
        })
        results.update(metrics.derived(results["final_val_loss"], results["params"]))
        median_ms = statistics.median(step_ms) if step_ms else math.nan
        results["train_ms_per_step"] = median_ms
        results["tokens_per_s"] = run.batch_size * block / median_ms * 1000 if step_ms else math.nan
        results["eval_time_s"] = eval_seconds
        results.update(metrics.memory_breakdown(model, optimizer))
        results["state_mb"] = results["param_mb"] + results["grad_mb"] + results["optimizer_mb"]

        if status not in (DIVERGED, FAILED):
            phase("measuring")
            results.update(measure_inference(model, corpus, run, device))
        else:
            results.update(inference_ms=math.nan, gen_chars_per_s=math.nan)
        if run.checkpoint and status != FAILED:
            phase("saving")
            save_checkpoint(run.checkpoint, model, corpus, run)
        results["peak_rss_mb"] = metrics.peak_rss_mb()
        results["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / metrics.MB if device.startswith("cuda") else math.nan
    except Exception as err:  # the history is measured already: return it with what went wrong
        failure = f"measuring or saving the model after {step} steps failed: {_error_text(err)}"
        status = DIVERGED if status == DIVERGED else FAILED  # a diverged run stays diverged
        message = f"{message}; {failure}" if message else failure
    results.setdefault("steps", step)
    results.setdefault("device", device)
    results.setdefault("threads", threads)
    results.setdefault("node", platform.node())
    results.setdefault("shared_with", "")  # as far as train() knows; worker.run_many names the runs beside it
    results["total_time_s"] = time.perf_counter() - started
    for m in metrics.METRICS:  # whatever was not measured
        results.setdefault(m.name, math.nan)
    results["status"], results["message"] = status, message
    result.status, result.message, result.results = status, message, results
    emit({"event": "done", "model": run.name, "status": status, "message": message, "results": results})
    return result


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


def save_checkpoint(path, model, corpus, run):
    torch.save({"model_config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
                "chars": corpus.chars, "run_config": run.to_dict()}, path)


def load_checkpoint(path, device="cpu"):
    """(model, chars) from a checkpoint saved by train(); loaded with weights_only=True."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = LanguageModel(ModelConfig(**ckpt["model_config"])).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt["chars"]
