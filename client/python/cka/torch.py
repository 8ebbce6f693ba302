"""PyTorch integration: forward hooks that stream the activations of named layers.

The only module of the package that imports torch.

    streamer = cka.Streamer(client, "run42", source="resnet")
    with cka.torch.ModelHooks(streamer, model, ["layer*.conv1", "fc"], every=10) as hooks:
        for step, (x, y) in enumerate(loader):
            hooks.step = step             # the batch id is str(step) unless batch_id= says
            loss = loss_fn(model(x), y)   # a tracked pass becomes one ActivationBatch
            ...

A layer with more columns than rows (n < d) goes as its n x n Gram X X^T unless the session
needs the rows (an exact or moment measure) or ``reduce_on_device=False`` says otherwise.

Batch ids join streams across jobs: they must name the same examples in every job (the same
loader order). Multi-process training: give each rank its own source (``f"resnet-r{rank}"``)
when ranks see different examples under the same step, or put the rank in the batch id
(``batch_id=lambda step: f"{step}-r{rank}"``) when the ranks of two jobs pair up.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import grpc
import torch

from cka import _wire
from cka.errors import CkaError
from cka.streamer import Streamer

__all__ = ["ModelHooks", "gram"]

_log = logging.getLogger("cka")


def gram(x: torch.Tensor) -> torch.Tensor:
    """Returns the n x n linear Gram X X^T of `x` (n, ...) on its own device.

    Accumulates in float64 and returns float32 (float64 for float64 input): the float32
    products are exact in float64, so only the final rounding remains. On the CPU, NumPy's
    symmetric product (syrk, half the flops of torch's general one) over float64 column
    chunks; elsewhere torch in float64 on the device.
    """
    with torch.no_grad():
        x2 = x.detach().reshape(x.shape[0], -1)
        if x2.device.type == "cpu" and x2.dtype in (torch.float32, torch.float64):
            k = torch.from_numpy(_wire.gram_float64(x2.numpy()))
        else:
            x64 = x2.to(torch.float64)
            k = x64 @ x64.T
        return k if x.dtype == torch.float64 else k.to(torch.float32)


def _gram_is_smaller(x: torch.Tensor) -> bool:
    n = x.shape[0]
    return n * n * (8 if x.dtype == torch.float64 else 4) < x.numel() * x.element_size()


def _output_tensor(output) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


class ModelHooks:
    """Forward hooks on the modules of `model` whose names match `layers`.

    Each tracked forward pass of `model` becomes one batch of `streamer`: the outputs of the
    matched modules, without autograd, submitted when the pass ends. Layer names are the
    module names (``model.named_modules()``). The training thread's work per layer is O(1):
    a CPU output is handed to the streamer as it is (not copied; the streamer's thread
    detaches and encodes it), unless a later operation of the pass changes it in place (an
    ``nn.ReLU(inplace=True)``, a residual ``out += x``): such layers are cloned (see `clone`).

    Parameters
    ----------
    streamer : Streamer
        Carries the session and the source (one source per model).
    model : torch.nn.Module
    layers : sequence of str
        Module names or fnmatch globs (``"layer*.conv1"``).
    every : int
        Track only the passes whose step is a multiple of `every`.
    eval_only : bool
        Track only passes in eval mode (``model.training`` False).
    batch_id : callable, optional
        step -> batch id (str or int); default: the step.
    reduce_on_device : bool
        Send a layer's n x n Gram X X^T instead of its n x d activations when that is fewer
        bytes (n < d for float32) and the session takes Grams (no exact or moment measure).
        On by default: a session of the default measure gets Grams, one with an exact or
        moment measure activations. On the CPU the hooks hand the activations to the
        streamer, whose background thread computes the Gram (``submit(reduce_to_gram=True)``)
        once it has read the session's config, so that the training thread does no O(n d)
        work. On any other device (a GPU) ``gram`` computes it in the hook, on the device,
        and only the n x n result is copied to the host; before the first such Gram the hook
        asks the session once (``Streamer.gram_allowed``, a unary call on the training
        thread), and while the answer is unknown (the call failed) it hands the activations
        to the streamer as on the CPU. False opts out: the layers go as activations, unless
        the streamer's own ``reduce_to_gram`` is set.
    clone : bool
        Clone every layer in its hook (a copy on the training thread). By default the first
        tracked pass clones every layer and notes, by torch's in-place counters, which
        outputs the rest of the pass changed; later passes clone only those. A layer seen
        changing later (the model took another path) is cloned from then on, and that pass
        is not sent (``skipped``; logged). Outputs under ``torch.inference_mode`` count no
        changes and are always cloned. What the training loop changes after the pass is
        the streamer's to catch (``Streamer.submit``).

    Attributes
    ----------
    step : int
        The step of the next pass; every pass of `model` adds 1 when it ends. Set it before
        each training step when a step runs more than one forward pass.
    gram_layers : int
        The layers submitted for Gram reduction so far (``reduce_on_device``): reduced on the
        device, or handed to the streamer to reduce (its ``stats.gram_reduced_layers`` counts
        those it did reduce; none for a session with an exact or moment measure).
    cloned : set of str
        The layers cloned in every pass (all of them with `clone`, else those learned).
    skipped : int
        Tracked passes not sent because a layer taken by reference changed during the pass.

    Raises
    ------
    CkaError
        INVALID_ARGUMENT when a pattern matches no module (naming it), or `every` < 1.

    Notes
    -----
    A context manager: the hooks are attached on entry and removed on exit. A module called
    several times in one pass contributes its last output. Hooks run on the thread of the
    forward pass; ``Streamer.submit`` may block under the "block" policy.
    """

    def __init__(
        self,
        streamer: Streamer,
        model: torch.nn.Module,
        layers: Sequence[str],
        *,
        every: int = 1,
        eval_only: bool = False,
        batch_id: Optional[Callable[[int], Union[str, int]]] = None,
        reduce_on_device: bool = True,
        clone: bool = False,
    ) -> None:
        if every < 1:
            raise CkaError(grpc.StatusCode.INVALID_ARGUMENT, f"every: {every}, expected >= 1")
        names = [name for name, _ in model.named_modules() if name]
        self.modules: Dict[str, torch.nn.Module] = {}
        for pattern in layers:
            matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                raise CkaError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"layers: '{pattern}' matches no module of the model (modules: "
                    f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''})",
                )
            for n in matched:
                self.modules[n] = model.get_submodule(n)
        self.streamer = streamer
        self.model = model
        self.every = every
        self.eval_only = eval_only
        self.batch_id = batch_id
        self.reduce_on_device = reduce_on_device
        self._asked_gram_allowed = False  # the hooks ask the session at most once
        self.step = 0
        self.gram_layers = 0
        self.cloned: Set[str] = set(self.modules) if clone else set()
        self.skipped = 0
        self._learning = not clone  # until the first tracked pass has ended
        self._tracking = False
        # Per tracked pass: what goes to the streamer (outputs, their clones, device Grams),
        # and the outputs watched with their in-place counters when their hook ran.
        self._layers: Dict[str, torch.Tensor] = {}
        self._grams: Dict[str, torch.Tensor] = {}
        self._watched: Dict[str, Tuple[torch.Tensor, int]] = {}
        self._handles: List = []

    def __enter__(self) -> "ModelHooks":
        self._handles.append(self.model.register_forward_pre_hook(self._begin))
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._capture(name)))
        self._handles.append(self.model.register_forward_hook(self._end))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Removes the hooks. Idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _begin(self, module, inputs) -> None:
        self._tracking = (self.step % self.every == 0
                          and not (self.eval_only and self.model.training))
        self._layers, self._grams, self._watched = {}, {}, {}

    def _capture(self, name: str):
        def hook(module, inputs, output) -> None:
            if not self._tracking:
                return
            x = _output_tensor(output)
            if x is None or x.dim() < 2:
                return
            for taken in (self._layers, self._grams, self._watched):
                taken.pop(name, None)
            if (self.reduce_on_device and x.device.type != "cpu"
                    and _gram_is_smaller(x) and self._device_grams_allowed()):
                self._grams[name] = gram(x)
                return
            inference = x.is_inference()  # counts no in-place changes
            if self._learning or name in self.cloned or inference:
                self._layers[name] = x.detach().clone()
            else:
                self._layers[name] = x  # the streamer's thread detaches it
            if not inference and name not in self.cloned:
                self._watched[name] = (x, x._version)

        return hook

    def _device_grams_allowed(self) -> bool:
        allowed = self.streamer.gram_allowed(ask=not self._asked_gram_allowed)
        self._asked_gram_allowed = True
        return bool(allowed)

    def _end(self, module, inputs, output) -> None:
        step = self.step
        if self._tracking and (self._layers or self._grams):
            changed = [name for name, (x, version) in self._watched.items()
                       if x._version != version]
            self.cloned.update(changed)
            stale = [name for name in changed if self._layers[name] is self._watched[name][0]]
            self._learning = False
            if stale:
                self.skipped += 1
                _log.warning("cka.torch: step %d not sent: the pass changed the outputs of %s "
                             "in place after their hooks ran; they are cloned from now on",
                             step, ", ".join(stale))
            else:
                batch_id = self.batch_id(step) if self.batch_id is not None else step
                reduce = True if self.reduce_on_device else None
                self.streamer.submit(batch_id, step, self._layers, grams=self._grams,
                                     reduce_to_gram=reduce)
                self.gram_layers += len(self._grams)
                if self.reduce_on_device:
                    self.gram_layers += sum(1 for x in self._layers.values()
                                            if _gram_is_smaller(x))
        self._tracking = False
        self._layers, self._grams, self._watched = {}, {}, {}
        self.step = step + 1
