// Levqor portal behaviour: CSRF for htmx, copy buttons, code tabs, and the API-key actions.
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

  // ---- API key actions: the API answers JSON, shown here ---------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function parse(xhr) {
    try { return JSON.parse(xhr.responseText); } catch (e) { return {}; }
  }

  function showResult(node) {
    var box = document.getElementById("key-result");
    box.replaceChildren(node);
    return box;
  }

  function formatWhen(date) {
    return date.toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
  }

  function formatWait(seconds) {
    var h = Math.floor(seconds / 3600);
    var m = Math.ceil((seconds % 3600) / 60);
    if (m === 60) { h += 1; m = 0; }
    if (h && m) { return h + " h " + m + " min"; }
    if (h) { return h + " h"; }
    return Math.max(m, 1) + " min";
  }

  function showNewKey(body) {
    var code = el("code", { id: "new-key" }, [body.key]);
    var card = el("section", { "class": "card new-key", role: "status", "aria-labelledby": "new-key-title" }, [
      el("h2", { id: "new-key-title" }, ["Your new API key"]),
      el("p", { "class": "notice notice-warn" }, [
        el("strong", {}, ["Copy it now: it is shown only this once. "]),
        "We store only a hash, so nobody (not even us) can show it again. If you lose it, roll a new one.",
      ]),
      el("div", { "class": "secret" }, [
        code,
        el("button", { type: "button", "class": "btn btn-primary", id: "copy-new-key", "data-copy": "#new-key" }, ["Copy key"]),
      ]),
      el("button", { type: "button", "class": "btn btn-secondary", id: "dismiss-new-key" }, ["I have saved it"]),
    ]);
    showResult(card);
    document.getElementById("copy-new-key").focus();
    document.getElementById("dismiss-new-key").addEventListener("click", function () {
      document.getElementById("key-result").replaceChildren();
      var create = document.getElementById("key-create");
      if (create) { create.focus(); }
    });
  }

  function showLimited(xhr, body) {
    var wait = parseInt(xhr.getResponseHeader("Retry-After") || "0", 10);
    var when = new Date(Date.now() + wait * 1000);
    var text = "You can create or roll a key once a day. You can roll your key again at " +
      formatWhen(when) + " (in " + formatWait(wait) + ").";
    showResult(el("p", { "class": "notice notice-warn", role: "alert", id: "key-limit" }, [text]));
    var button = document.getElementById("key-create");
    if (button) {
      button.disabled = true;
      button.textContent = "Possible again " + formatWhen(when);
    }
  }

  function showProblem(xhr, body) {
    var message = body.detail || body.title || ("The request failed (" + xhr.status + ").");
    if (body.type && /csrf-failed$/.test(body.type)) {
      message = "This page's security token has expired. Reload the page and try again.";
    }
    showResult(el("p", { "class": "notice notice-error", role: "alert" }, [message]));
  }

  document.addEventListener("htmx:afterRequest", function (evt) {
    var source = evt.detail.elt;
    var action = source && source.getAttribute("data-key-action");
    if (!action) { return; }
    var xhr = evt.detail.xhr;
    var body = parse(xhr);
    if (action === "create" && xhr.status === 201) {
      showNewKey(body);
    } else if (action === "revoke" && xhr.status === 200) {
      showResult(el("p", { "class": "notice notice-ok", role: "status" }, [
        "Key " + body.hint + " is revoked: calls with it now fail. Create a new key when you need one.",
      ]));
    } else if (xhr.status === 429) {
      showLimited(xhr, body);
      return;
    } else {
      showProblem(xhr, body);
      return;
    }
    htmx.trigger(document.body, "key-changed");
  });

  // The key responses are JSON for the API's clients: never swap them into the page.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.getAttribute && elt.getAttribute("data-key-action")) {
      evt.detail.shouldSwap = false;
    }
  });

  // Other htmx calls (Run on /docs/sdk): say what went wrong where the answer would have gone.
  function showRequestFailure(evt, text) {
    var elt = evt.detail.elt;
    var target = evt.detail.target;
    if (!target || (elt && elt.getAttribute && elt.getAttribute("data-key-action"))) { return; }
    if (target.classList.contains("run-output")) {
      target.replaceChildren(el("div", { "class": "run-result run-error", role: "alert" }, [text]));
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

  document.addEventListener("htmx:load", function (evt) { initTabs(evt.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { initTabs(document); });
})();
