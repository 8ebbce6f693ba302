"""cka.torch against a real ckad: two small CNNs (different seeds) train for a few steps with
hooks on named layers; the session's cross-model and within-model matrix equals the float64
oracle of the activations the hooks saw (recorded independently by the test's own hooks),
with activations and with Gram reduction on the tensor's device."""

import grpc
import numpy as np
import pytest

import cka
from oracle import minibatch_cka

from conftest import import_torch  # noqa: E402

torch = import_torch()
import cka.torch as ckatorch  # noqa: E402


def small_cnn(seed: int) -> "torch.nn.Module":
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),  # "0": (n, 4, 6, 6), d 144 > n: Gram when reduced
        torch.nn.ReLU(inplace=True),  # modifies "0"'s output in place after the hook ran
        torch.nn.Flatten(),
        torch.nn.Linear(144, 10),  # "3": (n, 10), d < n: activations either way
    )


@pytest.mark.parametrize("reduce_on_device", [False, None], ids=["activations", "default"])
def test_two_models_train_and_match_the_oracle(client, session_id, reduce_on_device):
    """reduce_on_device=False opts out: activations. The default (None: the argument left
    out) sends "0" (d 144 > n 32) as its Gram, reduced by the streamer's thread on the CPU,
    and "3" (d 10 <= n) as activations."""
    rng = np.random.default_rng(7)
    data = torch.from_numpy(rng.standard_normal((12, 32, 1, 8, 8)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, (12, 32)))
    models = {"a": small_cnn(1), "b": small_cnn(2)}
    client.create_session(session_id, streams=[f"{s}/{l}" for s in models for l in ("0", "3")])
    recorded = {}  # step -> {stream: float32 array}, by the test's own hooks

    def recorder(stream):
        def hook(module, inputs, output):
            recorded.setdefault(current_step, {})[stream] = output.detach().clone().numpy()
        return hook

    own = [models[s][int(l)].register_forward_hook(recorder(f"{s}/{l}"))
           for s in models for l in ("0", "3")]
    streamers = {s: cka.Streamer(client, session_id, s) for s in models}
    optimizers = {s: torch.optim.SGD(m.parameters(), lr=0.05) for s, m in models.items()}
    options = {} if reduce_on_device is None else {"reduce_on_device": reduce_on_device}
    hooks = [ckatorch.ModelHooks(streamers[s], models[s], ["0", "[3]"], every=3, **options)
             for s in models]
    with hooks[0], hooks[1]:
        for current_step in range(12):
            for s, model in models.items():
                out = model(data[current_step])
                loss = torch.nn.functional.cross_entropy(out, labels[current_step])
                optimizers[s].zero_grad()
                loss.backward()
                optimizers[s].step()
    for handle in own:
        handle.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks
               for model in models.values() for m in model.modules()), "hooks left behind"
    for s in models:
        assert streamers[s].close(timeout=60) == []
        assert streamers[s].stats.acked == 4  # steps 0, 3, 6, 9
        # On the CPU the streamer's thread reduces "0" (d 144 > n 32) to its Gram, not "3".
        assert streamers[s].stats.gram_reduced_layers == (0 if reduce_on_device is False else 4)
    for h in hooks:
        # "0" is changed in place by the ReLU after it: cloned; "3" goes by reference.
        assert h.cloned == {"0"} and h.skipped == 0

    m = client.similarity(session_id)
    tracked = [recorded[step] for step in (0, 3, 6, 9)]
    expected, counts = minibatch_cka(m.rows, tracked)
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(m.batches, counts)
    assert (m.batches == 4).all()
    assert 0.2 < m.values[m.rows.index("a/0"), m.cols.index("b/0")] < 0.999
    client.delete_session(session_id)


@pytest.mark.parametrize("measure", [cka.Measure("exact", "linear", "exact"),
                                     cka.Measure.of_kind("cca", "cca_r2")],
                         ids=["exact", "moment"])
def test_the_default_sends_activations_to_a_session_that_needs_them(client, session_id, measure):
    """A session with an exact or a moment measure needs every row: by default the hooks
    offer "0" and "3" (d 144 and 10 > n 8) for reduction, but the streamer sends them as
    activations there."""
    client.create_session(session_id, measures=[measure], streams=["m/0", "m/3"])
    model = small_cnn(6)
    x = torch.zeros((8, 1, 8, 8)).normal_(generator=torch.Generator().manual_seed(2))
    with cka.Streamer(client, session_id, "m") as streamer:
        with torch.no_grad(), ckatorch.ModelHooks(streamer, model, ["0", "3"]) as hooks:
            for _ in range(3):
                model(x)
    assert streamer.gram_allowed(ask=False) is False  # learned before the first encode
    assert streamer.rejected == [] and streamer.stats.acked == 3
    assert streamer.stats.gram_reduced_layers == 0 and hooks.gram_layers == 6  # offered
    m = client.similarity(session_id, measure=measure.name)
    assert (m.batches == 3).all()
    client.delete_session(session_id)


class DeviceStreamer:
    """Stands in for a Streamer behind hooks on a device other than the CPU ("meta": shapes
    without data): answers gram_allowed as told, counts the questions, and keeps the shapes
    and devices of what each submit was given."""

    def __init__(self, allowed):
        self.allowed, self.asked, self.batches = allowed, [], []

    def gram_allowed(self, ask=True):
        self.asked.append(ask)
        return self.allowed

    def submit(self, batch_id, step, layers, grams=None, copy=False, reduce_to_gram=None):
        self.batches.append({
            "layers": {n: (tuple(x.shape), x.device.type) for n, x in layers.items()},
            "grams": {n: (tuple(x.shape), x.device.type) for n, x in (grams or {}).items()},
            "reduce_to_gram": reduce_to_gram})
        return True


@pytest.mark.parametrize("allowed,options,device_gram", [
    (True, {}, True),  # the default, a session that takes Grams: "0" reduced on the device
    (False, {}, False),  # an exact or moment measure: activations
    (None, {}, False),  # unknown (the question failed): activations, the streamer decides
    (True, {"reduce_on_device": False}, False),  # opted out: activations, never asked
], ids=["allowed", "exact", "unknown", "opted-out"])
def test_hooks_on_a_device_reduce_there_only_when_the_session_takes_grams(
        allowed, options, device_gram):
    """The device branch's decision, on torch's "meta" device (shapes, no data: there is no
    GPU here, so the device arithmetic itself is not run; only where each layer goes)."""
    model = small_cnn(7).to("meta")
    streamer = DeviceStreamer(allowed)
    with torch.no_grad(), ckatorch.ModelHooks(streamer, model, ["0", "3"], **options):
        for _ in range(3):
            model(torch.empty((32, 1, 8, 8), device="meta"))
    opted_out = options.get("reduce_on_device") is False
    # Asked once, on the first pass; later passes read the kept answer without a call.
    assert streamer.asked == ([] if opted_out else [True, False, False])
    for batch in streamer.batches:
        if device_gram:
            assert batch["grams"] == {"0": ((32, 32), "meta")}
            assert batch["layers"] == {"3": ((32, 10), "meta")}
        else:
            assert batch["grams"] == {}
            assert batch["layers"] == {"0": ((32, 4, 6, 6), "meta"), "3": ((32, 10), "meta")}
        assert batch["reduce_to_gram"] == (None if opted_out else True)
    assert len(streamer.batches) == 3


def test_eval_only_and_explicit_steps_and_batch_ids(client, session_id):
    client.create_session(session_id)
    model = small_cnn(3)
    x = torch.zeros((8, 1, 8, 8)).normal_(generator=torch.Generator().manual_seed(0))
    with cka.Streamer(client, session_id, "m") as streamer:
        with ckatorch.ModelHooks(streamer, model, ["*"], eval_only=True,
                                 batch_id=lambda step: f"r0-{step}") as hooks:
            model.train()
            model(x)  # not tracked: training mode
            model.eval()
            with torch.no_grad():
                for step in (10, 20):
                    hooks.step = step
                    model(x)
                model(x)  # step not set again: every pass adds 1, so this one is 21
            assert hooks.step == 22
    assert streamer.rejected == []
    assert streamer.stats.acked == 3
    info = client.get_session(session_id)
    assert sorted(info.streams) == ["m/0", "m/1", "m/2", "m/3"]  # "*" matched every module
    client.delete_session(session_id)


def test_a_pattern_that_matches_nothing_is_an_error(client):
    with cka.Streamer(client, "s", "m") as streamer:
        with pytest.raises(cka.CkaError) as error:
            ckatorch.ModelHooks(streamer, small_cnn(0), ["conv*"])
    assert "'conv*'" in error.value.message


def test_gram_on_device_accumulates_in_float64():
    x = torch.randn(5, 3000, generator=torch.Generator().manual_seed(1))
    k = ckatorch.gram(x)
    assert k.dtype == torch.float32 and k.shape == (5, 5)
    x64 = x.double()
    torch.testing.assert_close(k.double(), x64 @ x64.T, rtol=1e-7, atol=0)


@pytest.mark.parametrize("options", [{}, {"reduce_on_device": False}],
                         ids=["default", "activations"])
def test_a_diverged_step_is_a_record_and_training_streams_on(client, session_id, options):
    """A NaN in a hooked layer (a diverged step) comes back as the batch's record, naming the
    stream and the value's position (the example's row: with Gram reduction the streamer
    finds it in the activations, where the Gram's NaNs would name every row); the steps
    before and after it are applied."""
    client.create_session(session_id)
    model = small_cnn(4)
    x = torch.zeros((8, 1, 8, 8)).normal_(generator=torch.Generator().manual_seed(0))
    with cka.Streamer(client, session_id, "m") as streamer:
        with ckatorch.ModelHooks(streamer, model, ["0"], **options) as hooks:
            with torch.no_grad():
                for step in range(3):
                    hooks.step = step
                    diverged = x.clone()
                    diverged[2, 0, 1, 1] = float("nan")
                    model(diverged if step == 1 else x)
        [error] = streamer.flush(timeout=30)
    print(error)
    assert error.batch_id == "1" and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'m/0'" in error.message and "nan at row 2" in error.message  # example 2
    assert streamer.stats.acked == 2 and streamer.stats.reconnects == 0
    assert streamer.stats.gram_reduced_layers == (0 if options else 2)
    assert client.get_session(session_id).batches_applied == 2
    client.delete_session(session_id)


class RecordingStreamer:
    """Stands in for a Streamer: keeps a copy of what each submit was given (as the values
    were then) and whether the layer was the module's own output (taken by reference)."""

    def __init__(self):
        self.batches = []

    def submit(self, batch_id, step, layers, grams=None, copy=False, reduce_to_gram=None):
        self.batches.append({name: (x.detach().clone(), x) for name, x in layers.items()})
        return True


class Doubling(torch.nn.Module):
    """A linear layer whose output the parent doubles in place when `double` is set."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.lin = torch.nn.Linear(6, 8)
        self.double = False

    def forward(self, x):
        y = self.lin(x)
        if self.double:
            y.mul_(2)
        return y


def test_layers_go_by_reference_unless_the_pass_changes_them_in_place():
    """The first pass clones and learns; an output no later operation changes goes by
    reference; one that starts changing is not sent once (skipped), then cloned; what is
    submitted is always the layer's output as its hook saw it (lin(x), not 2 lin(x))."""
    model = Doubling()
    x = torch.zeros((5, 6)).normal_(generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.lin(x).clone()
    outputs = []
    model.lin.register_forward_hook(lambda m, i, out: outputs.append(out))
    recorder = RecordingStreamer()
    with torch.no_grad(), ckatorch.ModelHooks(recorder, model, ["lin"]) as hooks:
        for double in (False, False, True, True, False):
            model.double = double
            model(x)
    assert hooks.step == 5 and hooks.skipped == 1 and hooks.cloned == {"lin"}
    assert len(recorder.batches) == 4  # pass 2 changed an output taken by reference
    by_reference = [batch["lin"][1] is out for batch, out in
                    zip(recorder.batches, [outputs[i] for i in (0, 1, 3, 4)])]
    assert by_reference == [False, True, False, False]  # learning clone, reference, clones
    for batch in recorder.batches:
        torch.testing.assert_close(batch["lin"][0], expected, rtol=0, atol=0)


def test_clone_true_clones_every_layer():
    model = Doubling()
    x = torch.ones((5, 6))
    outputs = []
    model.lin.register_forward_hook(lambda m, i, out: outputs.append(out))
    recorder = RecordingStreamer()
    with torch.no_grad(), ckatorch.ModelHooks(recorder, model, ["lin"], clone=True) as hooks:
        for _ in range(3):
            model(x)
    assert hooks.cloned == {"lin"} and len(recorder.batches) == 3
    for batch, out in zip(recorder.batches, outputs):
        assert batch["lin"][1].data_ptr() != out.data_ptr()
