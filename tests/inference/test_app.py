"""The Gradio app in a real headless browser (Debian's chromium + chromedriver, driven by selenium): upload a
real image file, read the class probabilities, see the CAM overlay and the intended-use warning."""
import os
import shutil

import pytest

import hf_medtl
from tests.conftest import CLASSES

gradio = pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.slow
# CI installs the browser (.ci/run), so there a missing browser is a failure, not a skip.
@pytest.mark.skipif(not (CHROMIUM and DRIVER) and os.environ.get("CI") != "true",
                    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")
def test_app_answers_an_upload_in_a_browser(trained_run, tmp_path):
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from hf_medtl.inference.app import build_app

    demo = build_app(trained_run)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(demo.local_url)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        warning = driver.find_element(By.ID, "intended-use").text
        assert "Not a medical device" in warning and "Out-of-scope use" in warning
        image = trained_run.parent / "images" / "malignant" / "malignant_000.png"
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(image))
        WebDriverWait(driver, 120).until(lambda d: "%" in d.find_element(By.ID, "probabilities").text)
        lines = driver.find_element(By.ID, "probabilities").text.splitlines()
        # the top class (the one predict gives this image), then every class
        [expected] = hf_medtl.predict(trained_run, [image])
        assert lines[1] == expected.top(1)[0][0] and set(CLASSES) <= set(lines)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cam img"))
        driver.save_screenshot(str(tmp_path / "app.png"))
        assert (tmp_path / "app.png").stat().st_size > 10_000
    finally:
        driver.quit()
        demo.close()
