"""Live mode in a real browser (issue 38), at desktop and phone sizes, on tiny random students: the mode shows for a
student only, a slider press redraws the images, and while the guidance slider is in view so are the images (not
under the sticky Generate bar). Screenshots go to test-artifacts/."""
from __future__ import annotations

import pytest

from app_fixtures import add_students, build_checkpoints, launch_app
from test_browser import ARTIFACTS, CHROMIUM, browser, new_page  # noqa: F401 (its module-scoped Chromium fixture)

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed"), pytest.mark.slow]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    demo, url = launch_app(add_students(build_checkpoints(tmp_path_factory.mktemp("live-browser"))))
    yield url
    demo.close()


def rect(page, selector):
    return page.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect(); "
                         "return {x: r.x, y: r.y, w: r.width, h: r.height}; })()")


def caption(page) -> str:
    return page.locator("#live-view p").inner_text() if page.locator("#live-view p").count() else ""


@pytest.mark.parametrize("size", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_live_redraws_as_the_slider_moves_with_the_images_in_view(url, browser, size):
    page = new_page(browser, size[0], size[1])
    page.set_default_timeout(30_000)
    page.goto(url + "?model=tiny-4step&seed=3")
    page.wait_for_function("document.querySelector('#model-card h3')?.innerText.trim() === 'tiny-4step'")
    page.locator("#live-group").first.wait_for(state="visible")
    # every id once in the page (gr.Group wrote the Live group's id on two nested elements, issue 35)
    assert page.evaluate("() => { const ids = [...document.querySelectorAll('[id]')].map((e) => e.id).filter(Boolean);"
                         " return ids.filter((id, k) => ids.indexOf(id) !== k); }") == []
    assert "Live is off" in page.locator("#live-view").first.inner_text()     # Live starts off and says how to use it
    page.locator("#live-on input").check()
    page.wait_for_function("document.querySelector('#live-view p')?.innerText.includes('guidance 2 ')")
    assert "seed 3" in caption(page) and "4 steps" in caption(page)
    slider = page.locator("#guidance input[type=range]").first
    slider.scroll_into_view_if_needed()
    slider.focus()
    page.keyboard.press("ArrowRight")        # a real input event: guidance 2 -> 2.25
    page.wait_for_function("document.querySelector('#live-view p')?.innerText.includes('guidance 2.25')")
    page.screenshot(path=str(ARTIFACTS / f"live-{size[0]}x{size[1]}.png"))
    img, bar, s = rect(page, "#live-view img"), rect(page, "#run-row"), rect(page, "#guidance input[type=range]")
    vw, vh = size
    # the slider and the images are in view together, the images not cut and not under the sticky Generate bar
    assert 0 <= s["y"] and s["y"] + s["h"] <= vh
    assert 0 <= img["y"] and img["y"] + img["h"] <= vh and 0 <= img["x"] and img["x"] + img["w"] <= vw
    assert img["y"] + img["h"] <= bar["y"] or img["y"] >= bar["y"] + bar["h"]
    assert img["w"] >= 4 * 48          # four 16 px images drawn at least 3x, side by side
    # the blend slider: its far end is seed B's images
    blend = page.locator("#live-blend input[type=number]").first
    blend.fill("1")
    blend.press("Enter")
    page.wait_for_function("document.querySelector('#live-view p')?.innerText.includes('seed 3 → 1 at 1.00')")
    page.locator("#live-on input").uncheck()            # off: the view says so, and the images go
    page.wait_for_function("document.querySelector('#live-view')?.innerText.includes('Live is off')")
    assert page.locator("#live-view img").count() == 0
    # a teacher has no Live mode: picking one hides it
    page.goto(url + "?model=tiny")
    page.wait_for_function("document.querySelector('#model-card h3')?.innerText.trim() === 'tiny'")
    page.wait_for_timeout(500)
    assert not page.locator("#live-group").first.is_visible()
    page.close()


def test_learns_step_slider_explains_each_step_as_it_moves(url, browser):
    """Learn's Explain slider redraws the explanation on every step it moves to (no button press): a student's run
    of 4 steps, the slider moved by the arrow keys from step 1."""
    page = new_page(browser, 1280, 900)
    page.set_default_timeout(30_000)
    page.goto(url + "?model=tiny-4step&seed=3")
    page.wait_for_function("document.querySelector('#model-card h3')?.innerText.trim() === 'tiny-4step'")
    page.wait_for_selector("#generate-btn:not([disabled])")
    page.locator("#generate-btn").click()
    page.wait_for_function("(document.querySelector('#status')?.innerText || '').includes('Done')")
    page.get_by_role("tab", name="Learn").click()
    page.get_by_text("seed 3 · first image (4/4 steps)").first.wait_for()
    slider = page.locator("#explain-step input[type=range]").first
    slider.focus()
    for step in (2, 3):
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.querySelector('#explain-md')?.innerText.includes('Step {step} of 4')")
    page.close()

