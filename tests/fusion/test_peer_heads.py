"""AVGZSLNet and AVCA against the peers' own models, the branch distances evaluation sums, and the peers' beta rule.

`_PeerAVCA` and `_PeerAVGZSLNet` re-implement, with AVCA-GZSL's parameter names, what its `src/model.py`,
`src/model_improvements.py`, `src/loss.py` and `src/utils.py` compute (read at 2711aeb): their state_dicts are what
a checkpoint of the peers holds, their forward and loss what the peers' code computes on it.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import InputError
from eval.gzsl import ValidationSplit
from eval.scoring import ClassEmbedder, ClipScores, ClipSet, branch_distances
from fusion.heads import create_head, head_entry
from fusion.heads.avgzslnet import cross_modal_triplets
from fusion.heads.head import ClipBatch
from fusion.model import ModelDims
from fusion.trained_run import load_run

AUDIO, VIDEO, WORDS = 12, 20, 16


class _PeerMLP(nn.Module):
    """`EmbeddingNet`: its layers under `fc`; AVCA's variant ends every block with BN -> ReLU -> Dropout."""

    def __init__(self, inputs, outputs, hidden=None, momentum=0.1, avca=True):
        super().__init__()
        if avca and hidden:
            layers = [nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.0),
                      nn.Linear(hidden, outputs), nn.BatchNorm1d(outputs, momentum=momentum), nn.ReLU(),
                      nn.Dropout(0.0)]
        elif avca:
            layers = [nn.Linear(inputs, outputs), nn.BatchNorm1d(outputs), nn.ReLU(), nn.Dropout(0.0)]
        else:  # AVGZSLNet's `src/model.py` EmbeddingNet with use_bn
            layers = [nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.0),
                      nn.Linear(hidden, outputs)]
        self.fc = nn.Sequential(*layers)

    def forward(self, x):
        return self.fc(x)


class _PreNorm(nn.Module):
    def __init__(self, width, fn):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(width), fn

    def forward(self, x):
        return self.fn(self.norm(x))


class _Attention(nn.Module):
    def __init__(self, width, heads, head_dim):
        super().__init__()
        self.heads, self.scale = heads, head_dim ** -0.5
        self.to_qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * head_dim, width), nn.Dropout(0.0))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        attention = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * self.scale, dim=-1)
        return self.to_out(torch.einsum("bhij,bhjd->bhid", attention, v).transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, width),
                                 nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class _Transformer(nn.Module):
    def __init__(self, width, depth, heads, head_dim, mlp):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([_PreNorm(width, _Attention(width, heads, head_dim)),
                                                   _PreNorm(width, _FeedForward(width, mlp))]) for _ in range(depth))

    def forward(self, x):
        for attention, feed_forward in self.layers:
            x = attention(x) + x
            x = feed_forward(x) + x
        return x


class _PeerAVCA(nn.Module):
    """AVCA-GZSL's `AVCA` (dropouts 0), small: width 24, 3 heads of 8, MLP 16, depth 2."""

    def __init__(self, width=24, hidden=32, out=10, momentum=0.99):
        super().__init__()
        self.A_enc = _PeerMLP(AUDIO, width, hidden, momentum)
        self.V_enc = _PeerMLP(VIDEO, width, hidden, momentum)
        self.cross_attention = _Transformer(width, 2, 3, 8, 16)
        self.W_proj = _PeerMLP(WORDS, out)
        self.D = _PeerMLP(out, WORDS)
        self.A_proj = _PeerMLP(width, out, hidden, momentum)
        self.V_proj = _PeerMLP(width, out, hidden, momentum)
        self.A_rec = _PeerMLP(out, width)
        self.V_rec = _PeerMLP(out, width)
        self.pos_emb1D = nn.Parameter(torch.randn(2, width))

    def get_embeddings(self, audio, video, words):
        phi_a, phi_v, theta_w = self.A_enc(audio), self.V_enc(video), self.W_proj(words)
        attended = self.cross_attention(torch.stack((phi_a + self.pos_emb1D[0], phi_v + self.pos_emb1D[1]), dim=1))
        return self.A_proj(phi_a + attended[:, 0]), self.V_proj(phi_v + attended[:, 1]), theta_w

    def distances(self, audio, video, words):
        """`evaluate_dataset_baseline`: the video branch only."""
        _, theta_v, theta_w = self.get_embeddings(audio, video, words)
        return torch.cdist(theta_v, theta_w)

    def loss(self, audio, video, words, audio_negative, video_negative, words_negative):
        """`forward` then `backward` with the run scripts' flags (additional triplets, reg_loss)."""
        mse, trip = nn.MSELoss(), nn.TripletMarginLoss(margin=1.0)
        phi_a, phi_v = self.A_enc(audio), self.V_enc(video)
        phi_a_neg, phi_v_neg = self.A_enc(audio_negative), self.V_enc(video_negative)
        theta_w, theta_w_neg = self.W_proj(words), self.W_proj(words_negative)
        rho_w = self.D(theta_w)
        pos = self.pos_emb1D
        attn = self.cross_attention(torch.stack((phi_a + pos[0], phi_v + pos[1]), dim=1))
        attn_neg = self.cross_attention(torch.stack((phi_a_neg + pos[0], phi_v_neg + pos[1]), dim=1))
        theta_v, theta_v_neg = self.V_proj(phi_v + attn[:, 1]), self.V_proj(phi_v_neg + attn_neg[:, 1])
        theta_a, theta_a_neg = self.A_proj(phi_a + attn[:, 0]), self.A_proj(phi_a_neg + attn_neg[:, 0])
        phi_v_rec, phi_a_rec = self.V_rec(theta_v), self.A_rec(theta_a)
        self.A_proj(phi_a_rec), self.V_proj(phi_v_rec)  # `se_em_hat1`, `se_em_hat2`: unused, but BN statistics move
        rho_a, rho_a_neg, rho_v, rho_v_neg = self.D(theta_a), self.D(theta_a_neg), self.D(theta_v), self.D(theta_v_neg)
        l_t = (trip(theta_a, theta_w, theta_a_neg) + trip(theta_v, theta_w, theta_v_neg)
               + trip(theta_w, theta_a, theta_w_neg) + trip(theta_w, theta_v, theta_w_neg))
        l_r = mse(phi_v_rec, phi_v) + mse(phi_a_rec, phi_a) + mse(theta_v, theta_w) + mse(theta_a, theta_w)
        l_rec = mse(words, rho_v) + mse(words, rho_a) + mse(words, rho_w)
        l_ct = trip(rho_w, rho_a, rho_a_neg) + trip(rho_w, rho_v, rho_v_neg)
        l_w = (trip(theta_w, theta_v, theta_v_neg) + trip(theta_w, theta_a, theta_a_neg)
               + trip(theta_a, theta_w, theta_w_neg) + trip(theta_v, theta_w, theta_w_neg))
        return l_rec + l_ct + l_w + l_t + l_r


class _TripletNet(nn.Module):
    def __init__(self, hidden, out):
        super().__init__()
        self.embedding_net1 = _PeerMLP(AUDIO, out, hidden, avca=False)
        self.embedding_net2 = _PeerMLP(VIDEO, out, hidden, avca=False)
        self.embedding_net3 = _PeerMLP(WORDS, out, WORDS, avca=False)


class _DecoderNet(nn.Module):
    def __init__(self, out, hidden):
        super().__init__()
        self.embedding_net = _PeerMLP(out, WORDS, hidden, avca=False)


class _PeerAVGZSLNet(nn.Module):
    """AVCA-GZSL's `AVGZSLNet` (dropouts 0; BN and normalised decoder outputs, as the run scripts train it)."""

    def __init__(self, hidden=32, out=10, decoder_hidden=8):
        super().__init__()
        self.triplet_net = _TripletNet(hidden, out)
        self.decoder_net = _DecoderNet(out, decoder_hidden)

    def distances(self, audio, video, words):
        """`evaluate_dataset`'s "both": cdist(a, t) + cdist(v, t)."""
        net = self.triplet_net
        t = net.embedding_net3(words)
        return torch.cdist(net.embedding_net1(audio), t) + torch.cdist(net.embedding_net2(video), t)

    def loss(self, audio, video, words, audio_negative, video_negative, words_negative):
        """`AVGZSLLoss` of the model's outputs (L2Loss distance, triplet margin 1)."""
        net, decode = self.triplet_net, self.decoder_net.embedding_net
        a_p, v_p, t_p = net.embedding_net1(audio), net.embedding_net2(video), net.embedding_net3(words)
        a_q, v_q, t_q = (net.embedding_net1(audio_negative), net.embedding_net2(video_negative),
                         net.embedding_net3(words_negative))
        x_ta_p, x_tv_p, x_tt_p, x_ta_q, x_tv_q = (nn.functional.normalize(decode(x)) for x in (a_p, v_p, t_p, a_q, v_q))
        trip = nn.TripletMarginLoss(margin=1.0)

        def l2(x, y):
            return (x - y).pow(2).sum(1).pow(0.5)

        l_rec = l2(x_tt_p, words).mean() + l2(x_ta_p, words).mean() + l2(x_tv_p, words).mean()
        cmd = l_rec + trip(x_tt_p, x_ta_p, x_ta_q) + trip(x_tt_p, x_tv_p, x_tv_q)
        ct = trip(t_p, a_p, a_q) + trip(a_p, t_p, t_q) + trip(t_p, v_p, v_q) + trip(v_p, t_p, t_q)
        return cmd + ct


PEERS = {"avca": _PeerAVCA, "avgzslnet": _PeerAVGZSLNet}
SHAPES = {"avca": {"encoder_hidden_dim": 32, "feature_dim": 24, "decoder_hidden_dim": 32, "output_dim": 10, "depth": 2,
                   "attention_heads": 3, "attention_head_dim": 8, "mlp_dim": 16},
          "avgzslnet": {"hidden_dim": 32, "output_dim": 10, "decoder_hidden_dim": 8}}
NO_DROPOUT = {"avca": {"embedding_dropout": 0.0, "decoder_dropout": 0.0, "additional_dropout": 0.0,
                       "batchnorm_momentum": 0.99},
              "avgzslnet": {"dropout": 0.0, "decoder_dropout": 0.0}}


def _peer(method: str) -> nn.Module:
    """A peer model with random weights and random BatchNorm statistics (so that eval mode matters)."""
    torch.manual_seed(0)
    peer = PEERS[method]()
    for module in peer.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.normal_(std=0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return peer


def _ours(method: str, peer: nn.Module):
    values, state = head_entry(method).peer_weights(peer.state_dict())
    dims = values.pop("dims")
    assert dims == {"audio_dim": AUDIO, "video_dim": VIDEO, "embedding_dim": WORDS} and values == SHAPES[method]
    head = create_head(method, {**values, **NO_DROPOUT[method]},
                       ModelDims(video_tokens=1, audio_tokens=1, num_classes=1, **dims), extracted=False)
    head.load_state_dict(state)
    return head


@pytest.mark.parametrize("method", ["avca", "avgzslnet"])
def test_peer_weights_predict_what_the_peers_model_predicts(method):
    peer = _peer(method).eval()
    head = _ours(method, peer).eval()
    generator = torch.Generator().manual_seed(1)
    audio, video = 3 * torch.randn(64, AUDIO, generator=generator), 3 * torch.randn(64, VIDEO, generator=generator)
    words = torch.randn(9, WORDS, generator=generator)
    with torch.no_grad():
        expected = peer.distances(audio, video, words).numpy()
        embeddings = head.embed_clips(video, audio).numpy()
    ours = branch_distances(embeddings, head.class_space(words.numpy()), head.branches, head.decision)
    assert np.allclose(ours, expected, rtol=1e-4, atol=1e-5)
    predicted = ours.argmin(axis=1)
    assert np.array_equal(predicted, expected.argmin(axis=1)) and np.unique(predicted).size > 1  # not one class


@pytest.mark.parametrize("method", ["avca", "avgzslnet"])
def test_the_training_loss_is_the_peers_loss(method):
    peer = _peer(method).train()
    head = _ours(method, peer).train()
    generator = torch.Generator().manual_seed(2)
    audio, video = torch.randn(2, 8, AUDIO, generator=generator), torch.randn(2, 8, VIDEO, generator=generator)
    classes = torch.randn(5, WORDS, generator=generator)
    labels = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2], [1, 2, 3, 4, 0, 2, 3, 4]])
    expected = peer.loss(audio[0], video[0], classes[labels[0]], audio[1], video[1], classes[labels[1]])
    losses = head.training_losses(ClipBatch(video[0], audio[0], labels[0]), ClipBatch(video[1], audio[1], labels[1]),
                                  classes)
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses.total.item() == pytest.approx(sum(part.item() for part in losses.parts.values()), rel=1e-6)


def test_one_avca_step_moves_weights_and_batchnorm_statistics_as_the_peers_step():
    """`optimize_params(optimize=True)` (its optimiser holds every module, not `pos_emb1D`), then `get_embeddings` in
    training mode, as AVCA-GZSL's `train_step` runs them. SGD stands in for both Adams: Adam turns the rounding noise
    of the ~0 gradients of biases before a BatchNorm into steps of the full lr."""
    peer = _peer("avca").train()
    head = _ours("avca", peer).train()
    generator = torch.Generator().manual_seed(3)
    audio, video = torch.randn(2, 8, AUDIO, generator=generator), torch.randn(2, 8, VIDEO, generator=generator)
    classes = torch.randn(5, WORDS, generator=generator)
    labels = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2], [1, 2, 3, 4, 0, 2, 3, 4]])
    modules = [p for name, p in peer.named_parameters() if name != "pos_emb1D"]
    peer_optimizer = torch.optim.SGD(modules, lr=1e-2, weight_decay=1e-5)
    peer_optimizer.zero_grad()
    peer.loss(audio[0], video[0], classes[labels[0]], audio[1], video[1], classes[labels[1]]).backward()
    peer_optimizer.step()
    peer.get_embeddings(audio[0], video[0], classes[labels[0]])
    trained = head.optimizer(1e-2, 1e-5).param_groups[0]["params"]
    assert len(trained) == len(modules) and all(p is not head.positions for p in trained)
    optimizer = torch.optim.SGD(trained, lr=1e-2, weight_decay=1e-5)
    batch = ClipBatch(video[0], audio[0], labels[0])
    optimizer.zero_grad()
    head.training_losses(batch, ClipBatch(video[1], audio[1], labels[1]), classes).total.backward()
    optimizer.step()
    head.after_step(batch, classes)
    _, expected = head_entry("avca").peer_weights(peer.state_dict())
    moved = {key for key, value in _ours("avca", _peer("avca")).state_dict().items()
             if not torch.equal(value, expected[key])}
    assert "positions" not in moved and {"video_projection.5.running_mean", "text_projection.0.weight"} <= moved
    assert all(torch.allclose(value.double(), expected[key].double(), rtol=1e-4, atol=1e-6)
               for key, value in head.state_dict().items())


def test_comparison_heads_are_not_concatenated_in_silence():
    from fusion.predict import ConcatenatedHeads

    dims = ModelDims(video_tokens=1, video_dim=VIDEO, audio_tokens=1, audio_dim=AUDIO, num_classes=3,
                     embedding_dim=WORDS)
    with pytest.raises(InputError, match=r"comparison head\(s\) \['avca', 'sje'\] cannot be concatenated"):
        ConcatenatedHeads([create_head("avca", {}, dims, True), create_head("sje", {}, dims, True)])


def test_cross_modal_triplets_by_hand():
    # 1-d points, margin 1: trip(t, a, a-) = max(0, 0.5 - 3 + 1) = 0; trip(a, t, t-) = 0.5 - 0.5 + 1 = 1;
    # trip(t, v, v-) = 2 - 2.5 + 1 = 0.5; trip(v, t, t-) = 2 - 1 + 1 = 2
    t, a, v = torch.tensor([[0.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]])
    t_negative, a_negative, v_negative = torch.tensor([[1.0]]), torch.tensor([[3.0]]), torch.tensor([[2.5]])
    loss = cross_modal_triplets(nn.TripletMarginLoss(margin=1.0), t, a, v, t_negative, a_negative, v_negative)
    assert loss.item() == pytest.approx(3.5, abs=1e-4)


@pytest.mark.parametrize("method, change, message", [
    ("avca", lambda s: s.pop("V_proj.fc.4.weight"), r"AVCA: 1 missing \['V_proj.fc.4.weight'\]"),
    ("avca", lambda s: s.update({"extra.weight": torch.zeros(1)}), r"1 unexpected \['extra.weight'\]"),
    ("avca", lambda s: s.update({"V_proj.fc.0.weight": torch.zeros(3, 3)}),
     r"1 of another shape \['V_proj.fc.0.weight \(3, 3\) \(expected \(32, 24\)\)'\]"),
    ("avca", lambda s: s.pop("A_enc.fc.0.weight"), "not an AVCA-GZSL avca state_dict: missing keys: A_enc.fc.0.weight"),
    ("avgzslnet", lambda s: s.pop("decoder_net.embedding_net.fc.1.running_var"),
     r"AVGZSLNet: 1 missing \['decoder_net.embedding_net.fc.1.running_var'\]"),
])
def test_peer_weights_name_what_does_not_fit_in_one_line(method, change, message):
    state = dict(_peer(method).state_dict())
    change(state)
    with pytest.raises(InputError, match=message) as error:
        head_entry(method).peer_weights(state)
    assert "\n" not in str(error.value)


def _scores(embeddings, labels, beta_modes=(("audio",), ("video",), ("audio", "video")), decision=("audio", "video"),
            store="s"):
    n = len(labels)
    return ClipScores(clips=ClipSet.of(store, range(n)), clip_ids=np.array([f"{store}{i}" for i in range(n)]),
                      labels=np.array(labels), splits=np.array(["val"] * n), embeddings=np.asarray(embeddings, float),
                      offsets=None, rule="plain", branches=("audio", "video"), decision=decision,
                      beta_modes=beta_modes)


def test_branch_distances_sum_the_decision_and_pool_across_stores():
    scores = _scores([[0.0, 0.0, 3.0, 4.0]], ["a"])  # audio (0, 0), video (3, 4)
    classes = np.array([[0.0, 0.0], [3.0, 0.0]])
    assert scores.distances(classes).tolist() == [[5.0, 3.0 + 4.0]]
    assert scores.distances(classes, ["video"]).tolist() == [[5.0, 4.0]]
    assert _scores([[0.0, 0.0, 3.0, 4.0]], ["a"], decision=("video",)).aligned_embeddings().tolist() == [[3.0, 4.0]]
    assert scores.aligned_embeddings().tolist() == [[1.5, 2.0]]  # figures: the mean of the summed branches
    pooled = scores.concat(_scores([[1.0, 0.0, 0.0, 0.0]], ["b"], store="t"))
    assert pooled.distances(classes).tolist() == [[5.0, 7.0], [1.0, 5.0]]
    with pytest.raises(InputError, match="cannot pool clips scored with branches"):
        scores.concat(_scores([[1.0, 0.0, 0.0, 0.0]], ["b"], decision=("video",), store="t"))


def test_the_peers_beta_rule_averages_the_audio_video_and_both_betas():
    # seen class "a" at 0, unseen "b" at 1 (1-d); the seen clip sits on "a" in both branches, the unseen clip at
    # 0.33 (audio) and 0.13 (video): it reaches "b" for beta > 0.34 (audio), > 0.74 (video), > 1.08 (both summed),
    # and the seen clip stays "a" for beta < 1, < 1, < 2. Best betas on the grid 0, 0.2, ...: 0.4, 0.8, 1.2.
    scores = _scores([[0.0, 0.0], [0.33, 0.13]], ["a", "b"])
    validation = ValidationSplit.build(scores, "val", ["a"], ClipSet.of("other", [0]))

    def embed(names):
        return np.array([[0.0] if n == "a" else [1.0] for n in names])

    assert validation.select_beta(embed, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4), "ours") == (1.2, 1.0)
    beta, hm = validation.select_beta(embed, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4), "peers")
    assert beta == pytest.approx(0.8) and hm == 0.0  # (0.4 + 0.8 + 1.2) / 3: the summed distance misses "b" there
    single = ValidationSplit.build(_scores([[0.0, 0.0], [0.33, 0.13]], ["a", "b"], beta_modes=()), "val", ["a"],
                                   ClipSet.of("other", [0]))
    with pytest.raises(InputError, match="beta_rule 'peers' .* needs a head that scores audio, video and both"):
        single.select_beta(embed, (0.0, 1.0), "peers")


@pytest.mark.parametrize("train", [{}, {"method": "sje"}])
def test_a_protocol_refuses_the_peers_beta_rule_for_a_head_of_one_embedding_before_training(train):
    from workflows.config import AVCAProtocolConfig

    AVCAProtocolConfig(dataset="UCF", store="s", out="o", train={"method": "avca"}, beta_rule="peers")
    with pytest.raises(InputError, match=r"beta_rule 'peers' .* needs a head that scores audio, video and both") as e:
        AVCAProtocolConfig(dataset="UCF", store="s", out="o", train=train, beta_rule="peers")
    assert "\n" not in str(e.value) and repr(train.get("method", "mzst")) in str(e.value)


def test_the_command_line_hands_the_beta_rule_to_the_protocols(tmp_path):
    from click.testing import CliRunner

    import cli

    (tmp_path / "store").mkdir()
    for protocol, given in (("avca", ["--dataset", "UCF", "--store", str(tmp_path / "store")]),
                            ("mzsl", ["--train-store", str(tmp_path / "store"), "--eval-store", str(tmp_path / "store"),
                                      "--groups", str(tmp_path / "g.csv")])):
        (tmp_path / "g.csv").write_text("class_name,group\n")
        result = CliRunner().invoke(cli.cli, ["protocol", protocol, *given, "--out", str(tmp_path / protocol),
                                              "--method", "sje", "--calibrated-stacking", "--beta-rule", "peers"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and "needs a head that scores audio, video" in lines[0]


@pytest.mark.parametrize("method", ["avgzslnet", "avca"])
def test_zeroshot_of_a_branch_head_sums_its_decision_branches(method, synthetic_store, vectors_file, tmp_path):
    from eval.config import PlotConfig
    from fusion.config import train_config_from_options
    from fusion.trainer import train
    from workflows.config import ZeroShotConfig
    from workflows.zeroshot import run_zeroshot

    run = tmp_path / "run"
    train(train_config_from_options({"store": synthetic_store.path, "out": run, "method": method, "epochs": 2,
                                     "embeddings": f"word2vec:{vectors_file}", "batch_size": 16, "n_batches": 4,
                                     "val_unseen_fraction": 0.25, "progress": False}))
    result = run_zeroshot(ZeroShotConfig(run_dir=run, store=synthetic_store.path, out=tmp_path / "rep",
                                         calibrated_stacking=True, val_split="run", beta_rule="peers",
                                         plots=PlotConfig(tsne_max_points=20, tsne_iterations=250)))
    assert result.metrics["calibrated_beta_rule"] == "peers" and result.metrics["calibrated_beta"] is not None
    assert {p.name for p in result.paths} >= {"metrics.json", "predictions.csv", "report.md", "tsne.png"}
    # by hand: the nearest unseen class by the sum of the decision branches' Euclidean distances
    model, info = load_run(run)
    with (tmp_path / "rep" / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "unseen"]
    index = np.array([list(synthetic_store.clip_ids).index(r["clip_id"]) for r in rows])
    tokens = synthetic_store.read(index, ["video_tokens", "audio_tokens", "has_audio"])
    with torch.no_grad():
        branches = model.eval().forward_views(torch.from_numpy(tokens["video_tokens"]).float(),
                                              torch.from_numpy(tokens["audio_tokens"]).float(),
                                              torch.from_numpy(tokens["has_audio"])).embedding.numpy()
    names = sorted({r["true_class"] for r in rows})
    points = model.class_space(ClassEmbedder(info)(names)).astype(np.float64)
    width = points.shape[1]
    distances = sum(np.linalg.norm(branches[:, None, k * width:(k + 1) * width] - points[None], axis=2)
                    for k, branch in enumerate(model.branches) if branch in model.decision)
    assert [names[k] for k in distances.argmin(axis=1)] == [r["pred_zsl"] for r in rows]
    with pytest.raises(InputError, match=f"method '{method}' sums the Euclidean distances of its branches"):
        run_zeroshot(ZeroShotConfig(run_dir=run, store=synthetic_store.path, rule="cosine"))
