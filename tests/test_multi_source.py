"""data_prep over several sources: sites kept, held-out sites named, sources balanced, vote ties never ordered.

Small synthetic files written here (the Reddit data is not openly licensed: never a fixture)."""

import json

import pytest
import torch

from commentrank.configs import PrepArguments
from commentrank.data.prepare import prepare_views
from commentrank.train.losses import listmle_loss, pairwise_all_loss


def write_source(path, site_posts: dict[str, int], votes=(9, 5, 2), prefix="p"):
    """A CUP IT file: `site_posts[site]` posts per site, comments with `votes` (ranks from the votes, ties broken by
    position, as the shared files break them by comment id)."""
    lines = []
    for site, n in site_posts.items():
        for i in range(n):
            order = sorted(range(len(votes)), key=lambda j: (-votes[j], j))
            comments = [
                {"text": f"{site} {prefix}{i} comment {j}", "score": order.index(j), "votes": votes[j]}
                for j in range(len(votes))
            ]
            lines.append(
                json.dumps({"id": f"{site}:{prefix}{i}", "site": site, "text": f"post {i}", "comments": comments})
            )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def two_sources(tmp_path):
    big = write_source(tmp_path / "big.jsonl", {"reddit.com/r/a": 30, "reddit.com/r/b": 20, "reddit.com/r/c": 10})
    small = write_source(tmp_path / "small.jsonl", {"x.stackexchange.com": 8, "y.stackexchange.com": 6}, prefix="q")
    return big, small


def prep(inputs, **kwargs):
    config = PrepArguments(inputs=list(inputs), split_by="site", **kwargs)
    return prepare_views(config)


def test_every_listwise_row_keeps_its_site(two_sources):
    views, _ = prep(two_sources, test_sites=["reddit.com/r/c"], validation_sites=["y.stackexchange.com"])
    sites = {split: set(views["listwise"][split]["site"]) for split in ("train", "validation", "test")}
    assert sites == {
        "train": {"reddit.com/r/a", "reddit.com/r/b", "x.stackexchange.com"},
        "validation": {"y.stackexchange.com"},
        "test": {"reddit.com/r/c"},
    }


def test_named_sites_hold_out_all_their_posts(two_sources):
    views, summary = prep(two_sources, test_sites=["reddit.com/r/c"], validation_sites=["reddit.com/r/b"])
    assert len(views["listwise"]["test"]) == 10 and len(views["listwise"]["validation"]) == 20
    assert summary.sites["train"] == {"reddit.com/r/a": 30, "x.stackexchange.com": 8, "y.stackexchange.com": 6}


def test_an_unknown_site_name_is_an_error_naming_it(two_sources):
    with pytest.raises(ValueError, match="reddit.com/r/typo"):
        prep(two_sources, test_sites=["reddit.com/r/typo"])


def test_named_sites_match_whatever_their_case_and_a_trailing_slash(tmp_path):
    """`A.com` and `a.com/` in the data did not match --test_sites a.com and trained without a word. Names match
    case-insensitively and without a trailing '/' now; the rows keep the data's site names."""
    path = write_source(tmp_path / "s.jsonl", {"a.com": 2, "A.com": 2, "a.com/": 2, "b.com": 3, "c.com": 3})
    views, _ = prep([path], test_sites=["a.com"], validation_sites=["B.com/"])
    sites = {split: sorted(set(views["listwise"][split]["site"])) for split in ("train", "validation", "test")}
    assert sites == {"train": ["c.com"], "validation": ["b.com"], "test": ["A.com", "a.com", "a.com/"]}


def test_sites_that_match_one_another_are_one_unit_of_a_site_split(tmp_path):
    """With split_by site and no named sites, `A.com` and `a.com/` were two sites: the same site could train and be
    tested on. Sites that match (without case and a trailing '/') are one unit, whatever the seed."""
    sites = {"a.com": 2, "A.com": 2, "a.com/": 2, **{f"{c}.com": 2 for c in "bcdefgh"}}
    path = write_source(tmp_path / "s.jsonl", sites)
    for seed in range(6):
        views, _ = prep([path], test_size=2, validation_size=2, seed=seed)
        holding = [split for split in views["listwise"] if {"A.com", "a.com/"} & set(views["listwise"][split]["site"])]
        assert len(holding) == 1 and set(views["listwise"][holding[0]]["site"]) >= {"a.com", "A.com", "a.com/"}, seed


def test_posts_without_a_site_training_while_sites_are_named_are_warned_about(tmp_path, caplog):
    """A post without a site (`unknown`) can be in no named held-out site: it trains, and the run says how many."""
    path = tmp_path / "s.jsonl"
    write_source(path, {"a.com": 2, "b.com": 3})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows[:2]:
        del row["site"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    _, summary = prep([str(path)], test_sites=["b.com"])
    message = "2 post(s) have no site"
    assert any(message in w for w in summary.warnings)
    assert any(message in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_named_sites_need_a_split_by_site():
    with pytest.raises(ValueError, match="split_by site"):
        PrepArguments(inputs=["x.jsonl"], test_sites=["a"])


def test_source_cap_balances_training_and_the_counts_add_up(two_sources):
    big, small = two_sources
    views, summary = prep(
        two_sources,
        test_sites=["reddit.com/r/c"],
        validation_sites=["y.stackexchange.com"],
        max_train_posts_per_source=8,
    )
    train_sites = views["listwise"]["train"]["site"]
    assert sum(s.startswith("reddit") for s in train_sites) == 8  # 50 training posts capped to 8
    assert sum(s.endswith("stackexchange.com") for s in train_sites) == 8  # 8 kept: under the cap
    assert len(views["listwise"]["test"]) == 10  # held-out posts are never capped
    assert summary.per_source[big] == {"posts": 60, "test": 10, "validation": 0, "train": 8, "train_dropped": 42}
    for counts in summary.per_source.values():
        assert counts["posts"] == counts["train"] + counts["validation"] + counts["test"] + counts["train_dropped"]
    assert summary.to_dict()["posts_dropped"]["train_over_source_cap"] == 42


def test_source_cap_sample_is_seeded(two_sources):
    kwargs = {"test_sites": ["reddit.com/r/c"], "max_train_posts_per_source": 8}
    first, _ = prep(two_sources, **kwargs)
    again, _ = prep(two_sources, **kwargs)
    other, _ = prep(two_sources, seed=1, **kwargs)
    assert first["listwise"]["train"]["post_id"] == again["listwise"]["train"]["post_id"]
    assert first["listwise"]["train"]["post_id"] != other["listwise"]["train"]["post_id"]


@pytest.fixture
def tied(tmp_path):
    """Site t: comments voted 9, 5, 5, 1 (a tie in the middle); site u: untied; site v: all votes tied."""
    path = tmp_path / "tied.jsonl"
    write_source(path, {"t": 3}, votes=(5, 9, 1, 5))
    untied = write_source(tmp_path / "u.jsonl", {"u": 2, "w": 2}, votes=(3, 7, 1))
    flat = write_source(tmp_path / "v.jsonl", {"v": 2}, votes=(4, 4))
    return [str(path), untied, flat]


def test_equal_vote_ties_share_a_rank_in_training(tied):
    views, summary = prep(tied, vote_ties="equal", test_sites=["w"])
    train = views["listwise"]["train"]
    rows = [r for r in train if r["site"] == "t"]
    assert all(sorted(r["ranks"]) == [0, 1, 1, 3] for r in rows)
    for row in rows:  # the tied comments are the two with 5 votes
        assert {r for r, v in zip(row["ranks"], row["votes"]) if v == 5} == {1}
    assert summary.posts_dropped["train_all_votes_tied"] == 2  # site v: nothing to learn
    assert sorted(views["listwise"]["test"][0]["ranks"]) == [0, 1, 2]


@pytest.mark.parametrize("strategy", ["adjacent", "all", "best_vs_rest"])
def test_no_pair_between_tied_comments(tied, strategy):
    views, summary = prep(tied, vote_ties="equal", pair_strategy=strategy, test_sites=["w"])
    votes = {}
    for row in views["listwise"]["train"]:
        votes.update(dict(zip(row["comments"], row["votes"])))
    pairs = [p for p in views["pairwise"]["train"] if p["post_id"].startswith("t:")]
    assert pairs and all(votes[p["chosen"]] > votes[p["rejected"]] for p in pairs)
    expected = {"adjacent": 4, "all": 5, "best_vs_rest": 3}[strategy]  # per post: 9>5a, 9>5b, 5a>1, 5b>1 (all: 9>1)
    assert len(pairs) == 3 * expected
    counted = summary.pairs[f"{strategy} (selected)"]  # counted over every split, without building the pairs
    assert counted["kept"] == counted["candidates"] == sum(len(split) for split in views["pairwise"].values())


def test_listmle_and_pairwise_losses_leave_tied_comments_unordered():
    """With tied ranks, swapping the rewards of the tied comments changes no loss: no order is imposed on them."""
    post_index, ranks = torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 1, 3])
    rewards = torch.tensor([2.0, 1.5, -0.5, 0.0])
    swapped = rewards[[0, 2, 1, 3]]
    for loss in (listmle_loss, pairwise_all_loss):
        assert torch.allclose(loss(rewards, post_index, ranks), loss(swapped, post_index, ranks))


def test_drop_vote_ties_drops_tied_training_posts_only(tied):
    views, summary = prep(tied, vote_ties="drop", test_sites=["t"])
    assert set(views["listwise"]["train"]["site"]) == {"u", "w"}
    assert summary.posts_dropped["train_vote_ties"] == 2  # site v; site t is held out and kept
    assert len(views["listwise"]["test"]) == 3 and all(
        sorted(r) == [0, 1, 2, 3] for r in views["listwise"]["test"]["ranks"]
    )


@pytest.mark.parametrize("options", [{"vote_ties": "drop"}, {"vote_ties": "equal"},
                                     {"max_train_posts_per_source": 1}])  # fmt: skip
def test_counts_add_up_after_training_only_drops(tied, options):
    """vote_ties and the source cap drop training posts after the split: they were counted as dropped and still as
    kept. read = kept + dropped, and kept is what the views hold."""
    views, summary = prep(tied, test_sites=["w"], **options)
    assert sum(summary.posts_dropped.values()) > 0
    assert summary.posts_read == summary.posts_kept + sum(summary.posts_dropped.values())
    assert summary.comments_read == summary.comments_kept + sum(summary.comments_dropped.values())
    listwise = views["listwise"]
    assert summary.posts_kept == sum(len(listwise[split]) for split in listwise)
    assert summary.comments_kept == sum(len(c) for split in listwise for c in listwise[split]["comments"])


def test_order_keeps_the_file_ranks(tied):
    views, summary = prep(tied, test_sites=["w"])
    assert all(sorted(r) == list(range(len(r))) for r in views["listwise"]["train"]["ranks"])
    assert not summary.posts_dropped


def test_posts_of_two_sites_sharing_an_id_are_split_by_their_own_site(tmp_path):
    """Two files whose posts have the same ids (e.g. files without ids: the default id is `file name:line`): a held-out
    site's posts never train, whatever id an earlier site's post had."""
    paths = []
    for site in ("a", "b", "c"):
        rows = [{"id": f"p{i}", "site": site, "text": f"{site} post {i}",
                 "comments": [{"text": f"{site} {i} best", "score": 0}, {"text": f"{site} {i} worse", "score": 1}]}
                for i in range(6)]  # fmt: skip
        (tmp_path / f"{site}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(tmp_path / f"{site}.jsonl"))
    views, summary = prep(paths, test_sites=["b"], validation_sites=["c"])
    assert {split: set(views["listwise"][split]["site"]) for split in ("train", "validation", "test")} == {
        "train": {"a"}, "validation": {"c"}, "test": {"b"}}  # fmt: skip
    assert summary.sites["test"] == {"b": 6}


def test_equal_vote_ties_never_reorder_the_file_ranks(tmp_path):
    """Votes that contradict the file's scores (the best-ranked comment has the fewest votes) tie only neighbours in
    rank: the training labels keep the file's order, as validation and test do, and the post is warned about."""
    comments = [{"text": "a", "score": 0, "votes": 1}, {"text": "b", "score": 1, "votes": 5},
                {"text": "c", "score": 2, "votes": 5}]  # fmt: skip
    rows = [{"id": f"p{i}", "site": "s" if i < 8 else "t", "text": f"post {i}",
             "comments": [{**c, "text": f"{c['text']} {i}"} for c in comments]} for i in range(10)]  # fmt: skip
    path = tmp_path / "contradict.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    views, summary = prep([str(path)], vote_ties="equal", test_sites=["t"])
    assert all(r == [0, 1, 1] for r in views["listwise"]["train"]["ranks"])  # b and c tie; a stays first
    assert all(p["chosen"].startswith("a") for p in views["pairwise"]["train"])
    assert any("contradict their ranks" in w for w in summary.warnings)


@pytest.mark.parametrize(("options", "says"), [
    ({"test_sites": ["reddit.com/r/a", "reddit.com/r/b", "reddit.com/r/c"],
      "validation_sites": ["x.stackexchange.com", "y.stackexchange.com"]}, "the train split holds no post"),
    ({"test_size": 0.1, "validation_size": 0.1}, "the validation and test splits hold no post"),  # 0.5 sites: 0
])  # fmt: skip
def test_a_split_the_recipe_asks_for_that_holds_no_post_is_warned_about(two_sources, options, says):
    _, summary = prep(two_sources, **options)
    assert any(says in w for w in summary.warnings)


def test_no_empty_split_warning_when_every_split_holds_posts(two_sources):
    _, summary = prep(two_sources, test_sites=["reddit.com/r/c"], validation_sites=["y.stackexchange.com"])
    assert not any("hold no post" in w or "holds no post" in w for w in summary.warnings)


def test_training_posts_ordering_equal_votes_are_counted_in_a_warning(tied):
    _, summary = prep(tied, test_sites=["w"])  # vote_ties: order, the default; sites t (3 posts) and v (2) tie
    assert any(w.startswith("5 of 7 training posts have comments with equal votes") for w in summary.warnings)
    _, summary = prep(tied, test_sites=["w"], vote_ties="equal")
    assert not any("training posts have comments with equal votes" in w for w in summary.warnings)
