"""The federation on Flower: the client (``FedMemoryClient``, a ``NumPyClient``), the strategy (``EqualAvg``, a
``FedAvg``), and an in-process run of Flower's own server loop.

Flower 1.42's simulations (``flwr.simulation.run_simulation`` and the legacy ``start_simulation``) both need Ray,
which this project does not install. ``simulate`` therefore runs Flower's ``Server.fit`` (its round loop:
``configure_fit`` → client ``fit`` → ``aggregate_fit`` → ``configure_evaluate`` → client ``evaluate``) in this
process, with each client behind a ``ClientProxy`` that calls it directly instead of over gRPC. The same client and
strategy classes run across real sites through Flower's deployment: ``client_app``/``server_app`` build the
``ClientApp`` and ``ServerApp`` that ``flower-supernode``/``flwr run`` load (docs/papers/fed-memory.md).

What travels: in homogeneous scenarios every state-dict entry (parameters and BatchNorm buffers; an integer entry
such as ``num_batches_tracked`` is taken from client 1), in heterogeneous ones only the head layers l−1 and l
(``nets.HEAD_SHARED``). The mean is unweighted (the paper, l. 2560), not FedAvg's sample-count weighting.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from .cme import Recorder, tracked
from .nets import ANALYSIS


class FedMemoryClient(NumPyClient):
    """One hospital: its network, its share of the data (train / held-out 20 %), its optimiser and CME recorder."""

    def __init__(self, cid: int, net, train_ds, test_ds, keys: list[str], *, epochs: int, batch_size: int, lr: float,
                 seed: int, predictor=None, log=None):
        self.cid, self.net, self.train_ds, self.test_ds, self.keys = cid, net, train_ds, test_ds, list(keys)
        self.epochs, self.batch_size, self.seed, self.pred, self.log = epochs, batch_size, seed, predictor, log
        self.device = predictor.device if predictor is not None else torch.device("cpu")
        self.net.to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.recorder = Recorder(tracked(self.net.named_parameters()), ANALYSIS)
        self.history: list[dict] = []  # per epoch: round, epoch, loss, train accuracy
        self.rounds: list[dict] = []  # per round: local accuracy (after the last local epoch), after broadcast
        self._local = None

    # -- Flower's interface -------------------------------------------------------------------------------------
    def get_parameters(self, config):
        state = self.net.state_dict()
        return [state[k].detach().cpu().numpy() for k in self.keys]

    def set_parameters(self, parameters) -> None:
        state = self.net.state_dict()
        for k, v in zip(self.keys, parameters, strict=True):
            state[k].copy_(torch.as_tensor(np.asarray(v), dtype=state[k].dtype))

    def fit(self, parameters, config):
        rnd = int(config.get("server_round", len(self.rounds) + 1))
        local = self._local  # the weights this client sent last round (None in round 1)
        self.set_parameters(parameters)
        self.recorder.start_round(rnd, self._weights(), local)
        t0 = time.perf_counter()
        for epoch in range(self.epochs):
            loss, acc = self._train_epoch(rnd, epoch)
            self.recorder.epoch(self._weights())
            self.history.append({"client": self.cid + 1, "round": rnd, "epoch": (rnd - 1) * self.epochs + epoch + 1,
                                 "loss": loss, "train_accuracy": acc})
        self.recorder.end_round()
        self._local = self._weights()
        local_acc = self.accuracy()
        self.rounds.append({"client": self.cid + 1, "arch": self.net.arch, "round": rnd, "local_accuracy": local_acc,
                            "fit_seconds": time.perf_counter() - t0})
        if self.log:
            self.log(f"round {rnd} client {self.cid + 1} ({self.net.arch}): loss {loss:.4f}  "
                     f"held-out accuracy {local_acc:.3f}  ({time.perf_counter() - t0:.1f} s)")
        return self.get_parameters({}), len(self.train_ds), {"cid": self.cid, "local_accuracy": local_acc}

    def evaluate(self, parameters, config):
        self.set_parameters(parameters)
        acc = self.accuracy()
        if self.rounds:
            self.rounds[-1]["broadcast_accuracy"] = acc
        return 1.0 - acc, len(self.test_ds), {"cid": self.cid, "accuracy": acc}

    # -- local work ---------------------------------------------------------------------------------------------
    def _weights(self) -> dict[str, np.ndarray]:
        return {n: p.detach().cpu().numpy().copy() for n, p in self.net.named_parameters()}

    def _train_epoch(self, rnd: int, epoch: int) -> tuple[float, float]:
        x_all, y_all = self.train_ds.tensors
        g = torch.Generator().manual_seed((self.seed * 1009 + self.cid) * 100_003 + rnd * 1000 + epoch)
        order = torch.randperm(len(y_all), generator=g)
        self.net.train()
        total, correct, n = 0.0, 0, 0
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            x, y = x_all[idx].float().to(self.device), y_all[idx].to(self.device)
            logits = self.net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return total / n, correct / n

    def probabilities(self) -> np.ndarray:
        """Softmax scores on the held-out share, through the manifest's predictor."""
        x_all, _ = self.test_ds.tensors
        if self.pred is None:
            self.net.eval()
            with torch.no_grad():
                out = [self.net(x_all[i:i + 64].float()) for i in range(0, len(x_all), 64)]
        else:
            wrapped = self.pred.setup(self.net)
            out = [self.pred(wrapped, x_all[i:i + 64].float()) for i in range(0, len(x_all), 64)]
        self.net.train()
        return torch.softmax(torch.cat(out), 1).numpy() if out else np.zeros((0, 4), np.float32)

    def accuracy(self) -> float:
        y = self.test_ds.tensors[1].numpy()
        return float((self.probabilities().argmax(1) == y).mean()) if len(y) else float("nan")


class EqualAvg(FedAvg):
    """FedAvg with the paper's unweighted mean; integer tensors (``num_batches_tracked``) from client 1."""

    def __init__(self, n_clients: int, initial, rounds_log: list | None = None):
        from flwr.common import ndarrays_to_parameters

        super().__init__(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=n_clients,
                         min_evaluate_clients=n_clients, min_available_clients=n_clients, accept_failures=False,
                         initial_parameters=ndarrays_to_parameters(initial),
                         on_fit_config_fn=lambda rnd: {"server_round": rnd})
        self.n_clients = n_clients
        self.aggregates: list[list[np.ndarray]] = []

    def aggregate_fit(self, server_round, results, failures):
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed: {failures[0]!r}")
        ordered = sorted(results, key=lambda r: int(r[1].metrics["cid"]))
        arrays = [parameters_to_ndarrays(res.parameters) for _, res in ordered]
        out = [np.mean(np.stack(col), axis=0).astype(col[0].dtype) if np.issubdtype(col[0].dtype, np.floating)
               else col[0] for col in zip(*arrays, strict=True)]
        self.aggregates.append(out)
        return ndarrays_to_parameters(out), {"mean_local_accuracy": float(np.mean(
            [res.metrics["local_accuracy"] for _, res in ordered]))}

    def aggregate_evaluate(self, server_round, results, failures):
        if failures:
            raise RuntimeError(f"round {server_round}: evaluation failed on {len(failures)} client(s)")
        accs = [res.metrics["accuracy"] for _, res in results]
        return float(1 - np.mean(accs)), {"mean_accuracy": float(np.mean(accs))}


class InProcessProxy(ClientProxy):
    """A ClientProxy that calls its NumPyClient in this process (what Ray's actors do in Flower's simulation)."""

    def __init__(self, cid: str, client: NumPyClient):
        super().__init__(cid)
        self.client = client.to_client()

    def get_properties(self, ins, timeout, group_id):
        return self.client.get_properties(ins)

    def get_parameters(self, ins, timeout, group_id):
        return self.client.get_parameters(ins)

    def fit(self, ins, timeout, group_id):
        return self.client.fit(ins)

    def evaluate(self, ins, timeout, group_id):
        return self.client.evaluate(ins)

    def reconnect(self, ins, timeout, group_id):
        from flwr.common import DisconnectRes

        return DisconnectRes(reason="")


def simulate(clients: list[FedMemoryClient], rounds: int, threads: int = 1):
    """Flower's ``Server.fit`` over ``clients`` for ``rounds`` rounds, in this process. ``threads`` > 1 trains the
    clients in parallel threads as the paper did (not bitwise reproducible: torch's RNG is shared). Returns the
    strategy (its ``aggregates``) and Flower's History."""
    import logging

    from flwr.common.logger import FLOWER_LOGGER
    from flwr.server import Server, SimpleClientManager

    FLOWER_LOGGER.setLevel(logging.WARNING)
    strategy = EqualAvg(len(clients), clients[0].get_parameters({}))
    manager = SimpleClientManager()
    for c in clients:
        manager.register(InProcessProxy(str(c.cid), c))
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(threads)
    history, _ = server.fit(num_rounds=rounds, timeout=None)
    return strategy, history


def client_app(make_client):
    """A Flower ``ClientApp`` for deployment: ``make_client(context) -> FedMemoryClient`` builds this site's client
    from its node config (data folder, architecture)."""
    from flwr.client import ClientApp

    return ClientApp(client_fn=lambda context: make_client(context).to_client())


def server_app(n_clients: int, initial, rounds: int):
    """A Flower ``ServerApp`` with the same strategy for ``rounds`` rounds (``initial``: client 1's shared tensors)."""
    from flwr.server import ServerApp, ServerConfig

    return ServerApp(config=ServerConfig(num_rounds=rounds), strategy=EqualAvg(n_clients, initial))
