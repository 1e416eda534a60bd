"""Issue 18 in headless Chromium: the launch form says what the group per prompt will really be on
the chosen dataset (and changes as the dataset and counts change), and the Groups tab marks a
truncated response. The group record is written through the worker's real sink."""
from __future__ import annotations

from tests.browser.support import SHOTS, login, make_run, sink_for
from tests.metric_support import group_record
from tests.runs_support import dataset_of, reward_config  # noqa: F401


def test_launch_form_effective_group_and_truncated_badge(live_server_url, chromium, team, user, reward_config):
    base = live_server_url
    bare = dataset_of(team, "bare", [0] * 6)
    mixed = dataset_of(team, "mixed", [3] * 4 + [1] * 2, expert_words=40)
    page = login(chromium, base, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(f"{base}/runs/new/")
    message = "#effective-group .group-message"
    page.select_option("select[name=method]", "gft")
    page.select_option("select[name=dataset]", str(bare.pk))
    page.fill("input[name=n_teacher]", "0")
    page.fill("input[name=n_self]", "4")
    page.wait_for_function("(sel) => document.querySelector(sel).textContent.includes('no teacher answers')",
                           arg=message, timeout=15_000)
    assert page.inner_text(message).startswith(
        "1 expert + 0 teachers + 4 self: this dataset has no teacher answers; generate them")
    assert page.get_attribute("#effective-group .group-message a", "href") == f"/datasets/{bare.pk}/"

    # Another dataset and counts: the message follows, with the short share and a truncation warning.
    page.select_option("select[name=dataset]", str(mixed.pk))
    page.fill("input[name=n_teacher]", "3")
    page.fill("input[name=max_response_len]", "16")
    page.wait_for_function("(sel) => document.querySelector(sel).textContent.includes('short group')",
                           arg=message, timeout=15_000)
    assert page.inner_text(message) == \
        "1 expert + 3 teachers + 4 self: 2 of 6 prompts (33%) get a short group (fewer answers than asked)"
    page.wait_for_selector("#effective-group .group-warnings li", timeout=10_000)
    assert "about 6 of 6 expert answers would be truncated" in page.inner_text("#effective-group .group-warnings")
    page.screenshot(path=str(SHOTS / "launch-effective-group.png"), full_page=True)

    # The Groups tab: an expert answer cut at max_response_len that scored 0 is marked truncated.
    run = make_run(team, user, "truncated", 0.5)
    record = group_record(0, "What is 2+3?")
    expert = record["responses"][0]
    expert.update(reward=0.0, advantage=-1.0, truncated=True)
    record["responses"][1].update(reward=1.0, advantage=1.0, truncated=False)
    sink = sink_for(run, 0, 200)
    try:
        sink.log_groups(10, [record])
        sink.flush()
    finally:
        sink.close()
    page.goto(f"{base}/runs/{run.pk}/#groups")
    page.click("[data-tab=groups]")
    page.wait_for_selector(".group-card .badge.truncated", timeout=15_000)
    badges = page.locator(".badge.truncated")
    assert badges.count() == 1 and badges.inner_text() == "truncated at 5 tokens"
    assert page.locator(".resp.src-expert .badge.truncated").count() == 1
    page.screenshot(path=str(SHOTS / "groups-truncated.png"), full_page=True)
    assert not errors, errors
