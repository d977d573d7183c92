/* monoq dashboard: refresh the live regions while the tab is visible, and small helpers.
 *
 * Regions marked data-poll carry htmx attributes (hx-get, hx-select, hx-swap) and listen for
 * the "monoq:poll" event. This file fires that event every data-poll-seconds while the page is
 * visible and live updates are on; it stops the timer when the tab is hidden and refreshes at
 * once when the tab comes back. A region is left alone while the user works in it (a focused
 * field, a ticked checkbox, an open <details>), so a refresh never eats a selection.
 * No inline script and no eval: the Content-Security-Policy allows neither.
 */
(function () {
  "use strict";

  var seconds = Number(document.body.getAttribute("data-poll-seconds")) || 2;
  var live = true;
  var timer = null;

  try {
    live = window.sessionStorage.getItem("monoq-live") !== "off";
  } catch (e) {
    live = true;
  }

  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
      return true;
    }
    return region.querySelector("input[type=checkbox]:checked, details[open]") !== null;
  }

  function poll() {
    if (!live || document.visibilityState !== "visible" || typeof window.htmx === "undefined") {
      return;
    }
    var regions = document.querySelectorAll("[data-poll]");
    for (var i = 0; i < regions.length; i++) {
      if (!busy(regions[i]) && !regions[i].classList.contains("htmx-request")) {
        window.htmx.trigger(regions[i], "monoq:poll");
      }
    }
  }

  function start() {
    if (timer === null && live && document.visibilityState === "visible") {
      timer = window.setInterval(poll, seconds * 1000);
    }
  }

  function stop() {
    if (timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  }

  function showToggle() {
    var button = document.getElementById("live-toggle");
    if (!button) {
      return;
    }
    button.hidden = document.querySelector("[data-poll]") === null;
    button.setAttribute("aria-pressed", live ? "true" : "false");
    button.textContent = "Live updates: " + (live ? "on" : "off");
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      poll();
      start();
    } else {
      stop();
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.id === "live-toggle") {
      live = !live;
      try {
        window.sessionStorage.setItem("monoq-live", live ? "on" : "off");
      } catch (e) {
        /* private mode: the choice lasts for this page only */
      }
      showToggle();
      if (live) {
        poll();
        start();
      } else {
        stop();
      }
    }
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target && target.id === "select-all") {
      var boxes = document.querySelectorAll("input[type=checkbox][name=ids]");
      for (var i = 0; i < boxes.length; i++) {
        boxes[i].checked = target.checked;
      }
    }
  });

  showToggle();
  start();
})();
