// Levqor portal behaviour: CSRF for htmx, copy buttons, code tabs, failed-request messages,
// hx-confirm's dialog.
// It builds no page content: the server answers every action with the HTML to show.
// Loaded as a file (the CSP allows no inline script).
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every state-changing htmx request carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (evt) {
    if (evt.detail.verb !== "get") {
      evt.detail.headers["X-CSRFToken"] = csrfToken();
    }
  });

  // ---- copy buttons -------------------------------------------------------------------------
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Older browsers and plain-http hosts: select a temporary textarea and copy it.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = document.execCommand("copy");
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest("[data-copy]");
    if (!button) { return; }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    var label = button.textContent;
    copyText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
      button.setAttribute("data-copied", "true");
    }, function () {
      button.textContent = "Press Ctrl+C";
    });
    setTimeout(function () { button.textContent = label; }, 2500);
  });

  // ---- code tabs (without JavaScript every panel simply shows) --------------------------------
  function initTabs(root) {
    root.querySelectorAll("[data-tabs]").forEach(function (box) {
      if (box.classList.contains("tabs-ready")) { return; }
      var list = box.querySelector('[role="tablist"]');
      var tabs = Array.prototype.slice.call(box.querySelectorAll('[role="tab"]'));
      function select(tab, focus) {
        tabs.forEach(function (t) {
          var on = t === tab;
          t.setAttribute("aria-selected", on ? "true" : "false");
          t.tabIndex = on ? 0 : -1;
          document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
        });
        if (focus) { tab.focus(); }
      }
      tabs.forEach(function (tab, i) {
        tab.addEventListener("click", function () { select(tab, false); });
        tab.addEventListener("keydown", function (e) {
          var next = null;
          if (e.key === "ArrowRight") { next = tabs[(i + 1) % tabs.length]; }
          if (e.key === "ArrowLeft") { next = tabs[(i - 1 + tabs.length) % tabs.length]; }
          if (e.key === "Home") { next = tabs[0]; }
          if (e.key === "End") { next = tabs[tabs.length - 1]; }
          if (next) { e.preventDefault(); select(next, true); }
        });
      });
      list.hidden = false;
      box.classList.add("tabs-ready");
      select(tabs[0], false);
    });
  }

  // ---- failed htmx calls: say what went wrong where the answer would have gone ----------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  // The server answers refusals with HTML; only a failure before any answer (an expired CSRF
  // token, a 5xx, no network) is told here: in Run's output on /docs/sdk, or in the target's
  // own error line (data-request-error, e.g. the key panel's).
  function showRequestFailure(evt, text) {
    var target = evt.detail.target;
    if (!target) { return; }
    if (target.classList.contains("run-output")) {
      target.replaceChildren(el("div", { "class": "run-result run-error", role: "alert" }, [text]));
      return;
    }
    var line = target.querySelector("[data-request-error]");
    if (line) {
      line.textContent = text;
      line.hidden = false;
    }
  }
  document.addEventListener("htmx:responseError", function (evt) {
    var status = evt.detail.xhr.status;
    showRequestFailure(evt, status === 400 || status === 403
      ? "This page's security token has expired. Reload the page and try again."
      : "The request failed (" + status + "). Try again in a moment.");
  });
  document.addEventListener("htmx:sendError", function (evt) {
    showRequestFailure(evt, "Could not reach the server. Check your connection and try again.");
  });

  // ---- hx-confirm asks in the page's own modal dialog (layout/base.html), not window.confirm ----
  // A button whose question depends on a choice (Roll: the grace period) names that <select> in
  // data-confirm-choice; the chosen option's data-confirm is then the question, read when it asks.
  // Its confirm button says what will happen (the asking button's own text, e.g. "Revoke"); Cancel
  // has focus first, so Enter straight away does nothing destructive. Esc closes it as Cancel.
  // One listener and one pending ask: a dialog's "close" event is a task queued after close(),
  // so when an ask follows a cancelled one at once, the earlier close can arrive with the new ask
  // open. A close that finds the dialog open is such a late one and must not settle the new ask.
  var pendingAsk = null;
  function confirmDialog() {
    var dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") { return null; }
    if (!dialog.dataset.wired) {
      dialog.dataset.wired = "yes";
      dialog.addEventListener("close", function () {
        if (dialog.open || !pendingAsk) { return; }
        var ask = pendingAsk;
        pendingAsk = null;
        if (ask.trigger.isConnected) { ask.trigger.focus(); }
        if (dialog.returnValue === "confirm") { ask.issueRequest(true); }
      });
    }
    return dialog;
  }
  document.addEventListener("htmx:confirm", function (evt) {
    var dialog = evt.detail.question ? confirmDialog() : null;
    if (!dialog) { return; }
    evt.preventDefault();
    var trigger = evt.detail.elt;
    var choice = document.getElementById(trigger.getAttribute("data-confirm-choice") || "");
    var chosen = choice && choice.selectedOptions[0];
    var question = (chosen && chosen.getAttribute("data-confirm")) || evt.detail.question;
    document.getElementById("confirm-question").textContent = question;
    document.getElementById("confirm-yes").textContent = trigger.textContent.trim() || "Confirm";
    dialog.returnValue = "";
    pendingAsk = { trigger: trigger, issueRequest: evt.detail.issueRequest };
    dialog.showModal();
  });

  // ---- the shell: Menu opens the left navigation on a narrow screen; the account menu closes ----
  // Without JavaScript the Menu link opens the navigation by its #fragment (CSS :target).
  document.addEventListener("click", function (evt) {
    var toggle = evt.target.closest("[data-menu-toggle]");
    if (toggle) {
      evt.preventDefault();
      var nav = document.getElementById(toggle.getAttribute("aria-controls"));
      var open = !nav.classList.contains("open");
      nav.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) {
        var first = nav.querySelector("a");
        if (first) { first.focus(); }
      }
      return;
    }
    document.querySelectorAll("details.account-menu[open], details.popover[open]").forEach(function (menu) {
      if (!menu.contains(evt.target)) { menu.open = false; }
    });
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Escape") { return; }
    document.querySelectorAll("details.account-menu[open], details.popover[open]").forEach(function (menu) {
      menu.open = false;
      menu.querySelector("summary").focus();
    });
  });

  // ---- the request log's side panel: focus moves into it, Close (or Esc) puts it away ----------
  var panelOpener = null;
  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "log-detail") { panelOpener = evt.detail.elt; }
  });
  document.addEventListener("htmx:afterSwap", function (evt) {
    var panel = document.getElementById("log-detail");
    if (panel && panel.classList.contains("side-panel") && evt.detail.elt === panel) { panel.focus(); }
  });
  function closePanel() {
    var panel = document.querySelector("#log-detail.side-panel");
    if (!panel) { return false; }
    var empty = document.createElement("div");
    empty.id = "log-detail";
    panel.replaceWith(empty);
    if (panelOpener && panelOpener.isConnected) { panelOpener.focus(); }
    return true;
  }
  document.addEventListener("click", function (evt) {
    if (evt.target.closest("[data-close-panel]") && closePanel()) { evt.preventDefault(); }
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape" && !document.querySelector("dialog[open]")) { closePanel(); }
  });

  // ---- "/" jumps to the docs search box, as on most docs sites; not while typing in a field ----
  // A visible box only: the sidebar's is hidden behind Menu on a narrow screen.
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "/" || evt.ctrlKey || evt.metaKey || evt.altKey || evt.defaultPrevented) { return; }
    var typing = evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]");
    if (typing || document.querySelector("dialog[open]")) { return; }
    var boxes = Array.prototype.filter.call(document.querySelectorAll("[data-search-box]"), function (box) {
      return box.offsetParent !== null;
    });
    if (boxes.length) {
      evt.preventDefault();
      boxes[boxes.length - 1].focus();
    }
  });

  document.addEventListener("htmx:load", function (evt) { initTabs(evt.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { initTabs(document); });
})();
