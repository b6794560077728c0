"""The DINO building blocks: ViT, head, loss, crops, data order, k-NN, parameter groups."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import FASHION, needs_data

from lrsched.errors import UsageError
from lrsched.recipes.dino import knn
from lrsched.recipes.dino.data import load_fashion_mnist, read_idx
from lrsched.recipes.dino.head import DINOHead, DINONet
from lrsched.recipes.dino.loss import DINOLoss
from lrsched.recipes.dino.model import ema_update, param_groups
from lrsched.recipes.dino.vit import PRESETS, ViT
from lrsched.schedules import Schedule
from lrsched.torch_sched import ScheduledField


def micro_net(channels: int = 1) -> DINONet:
    p = PRESETS["micro"]
    torch.manual_seed(0)
    return DINONet(ViT(p, channels), DINOHead(p.dim, p.head_hidden, p.head_bottleneck, p.out_dim))


def test_vit_takes_global_and_local_crops_through_one_network() -> None:
    net = micro_net()
    features, out = net([torch.randn(4, 1, 28, 28), torch.randn(6, 1, 16, 16)])
    assert features.shape == (10, PRESETS["micro"].dim)
    assert out.shape == (10, PRESETS["micro"].out_dim)
    assert net.backbone(torch.randn(3, 1, 28, 28)).shape == (3, PRESETS["micro"].dim)


def test_cls_patch_features_are_the_cls_token_then_the_mean_patch_token() -> None:
    vit = micro_net().backbone.eval()
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        tokens, both = vit.tokens(images), vit.features(images, "cls+patch")
        cls = vit.features(images, "cls")
    dim = PRESETS["micro"].dim
    assert both.shape == (3, 2 * dim) and torch.equal(cls, vit(images)) and torch.equal(both[:, :dim], cls)
    assert torch.allclose(both[:, dim:], tokens[:, 1:].mean(dim=1))
    assert tokens.shape[1] == 1 + (28 // PRESETS["micro"].patch) ** 2


def test_attention_matches_the_explicit_softmax_formula() -> None:
    attn = micro_net().backbone.blocks[0].attn
    x = torch.randn(2, 5, 48)
    b, n, d, h = 2, 5, 48, attn.heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_head_last_layer_is_weight_normalised() -> None:
    head = micro_net().head
    with torch.no_grad():
        head.last_layer.weight.mul_(7.0)  # scaling the rows changes nothing: norm fixed to 1
    z = torch.randn(3, PRESETS["micro"].dim)
    logits = head(z)
    assert logits.abs().max() <= 1.0 + 1e-5  # cosines between unit vectors


def test_dino_loss_matches_the_formula_and_updates_the_centre() -> None:
    torch.manual_seed(1)
    b, k, crops = 3, 8, 4
    student, teacher = torch.randn(crops * b, k), torch.randn(2 * b, k)
    loss_fn = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.fill_(0.5)
    loss, _ = loss_fn(student, teacher, 2, teacher_temp=0.04)
    pt = F.softmax((teacher - 0.5) / 0.04, dim=-1).chunk(2)
    ls = F.log_softmax(student / 0.1, dim=-1).chunk(crops)
    terms = [-(pt[q] * ls[v]).sum(-1).mean() for q in range(2) for v in range(crops) if v != q]
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    torch.testing.assert_close(loss_fn.center, 0.9 * 0.5 + 0.1 * teacher.mean(0, keepdim=True))


def test_param_groups_carry_multipliers_and_skip_decay_on_biases_and_norms() -> None:
    net = micro_net()
    groups = param_groups(net, lr=1e-3, weight_decay=0.04, layer_decay=0.5)
    names = dict(net.named_parameters())
    ids = {id(p): n for n, p in names.items()}
    depth = net.backbone.depth
    for g in groups:
        for p in g["params"]:
            name = ids[id(p)]
            no_wd = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
            assert g["wd_mult"] == (0.0 if no_wd else 1.0), name
            layer = net.backbone.layer_id(name[9:]) if name.startswith("backbone.") else depth + 1
            assert g["lr_mult"] == pytest.approx(0.5 ** (depth + 1 - layer)), name
    assert sum(len(g["params"]) for g in groups) == len(names)
    assert len({g["lr_mult"] for g in groups}) == depth + 2


def test_every_group_follows_the_schedule_times_its_multipliers() -> None:
    net = micro_net()
    opt = torch.optim.AdamW(param_groups(net, lr=1e-3, weight_decay=0.04, layer_decay=0.7))
    lr = Schedule("cosine", base=1e-3, final=1e-6, warmup=3, total=10)
    wd = Schedule("cosine", base=0.04, final=0.4, total=10)
    lr_field = ScheduledField(opt, lr, "lr", per_group="lr_mult")
    wd_field = ScheduledField(opt, wd, "weight_decay", per_group="wd_mult")
    for t in range(12):
        for g in opt.param_groups:  # docs/design.md section 5: lr(t) * lr_mult, exactly
            assert g["lr"] == lr(t) * g["lr_mult"] and g["weight_decay"] == wd(t) * g["wd_mult"]
        opt.step()
        lr_field.step()
        wd_field.step()


def test_ema_update_formula() -> None:
    student, teacher = micro_net(), micro_net()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t0, t1, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)


def test_knn_weighted_vote() -> None:
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn.knn_top1(train, labels, test, torch.tensor([0, 1]), k=3) == 1.0
    assert knn.knn_top1(train, labels, test, torch.tensor([1, 0]), k=3) == 0.0


def test_knn_subset_is_fixed_and_bounded() -> None:
    assert torch.equal(knn.subset(50, 0), torch.arange(50))
    assert torch.equal(knn.subset(50, 10), knn.subset(50, 10)) and len(knn.subset(50, 10)) == 10


@needs_data
def test_fashion_mnist_loads_and_raw_pixel_knn_is_strong() -> None:
    train, test = load_fashion_mnist(FASHION)
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert set(train.labels.unique().tolist()) == set(range(10))
    tr, te = knn.subset(len(train), 5000), knn.subset(len(test), 1000, seed=1)
    acc = knn.knn_top1(
        train.images[tr].flatten(1).float(), train.labels[tr], test.images[te].flatten(1).float(), test.labels[te]
    )
    assert 0.70 < acc < 0.95  # docs/design.md section 11: 0.846 on the full set


def test_truncated_idx_file_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(UsageError, match="not a readable idx file"):
        read_idx(path)
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_koleo_is_minus_mean_log_nearest_neighbour_distance() -> None:
    from lrsched.recipes.dino.loss import koleo

    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # normalised: (1,0), (0,1), (-1,0); nearest distances sqrt(2), sqrt(2), sqrt(2)
    assert float(koleo(x)) == pytest.approx(-math.log(math.sqrt(2)), rel=1e-6)
    tight = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    assert float(koleo(tight)) > float(koleo(x))  # clustered features cost more
