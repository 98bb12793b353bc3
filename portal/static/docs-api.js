// /docs/api: the reference's try-it. A key pasted into "Use this key" lives in this page's memory
// only (no storage, no cookie, never sent to the portal): it goes out solely as the x-api-key
// header of the calls tried here, which go to the sandbox twin of a /api/v1 operation. The
// portal session is not sent with them (credentials: "omit"), so only the key authenticates.
// A "Try this again" link from the request log names the operation and its values in the URL's
// #fragment (never sent to the server): #op-<operationId>&name=value&body=...
(function () {
  "use strict";

  var apiKey = "";
  var KEY = /^lvq_[0-9a-f]{32}_[0-9A-Za-z]{6}$/;

  function masked(key) { return key.slice(0, 8) + "…" + key.slice(-4); }

  function status(text) {
    var box = document.getElementById("try-key-status");
    if (box) { box.textContent = text; box.hidden = !text; }
  }

  function sandboxPath(path) {
    return path.indexOf("/api/v1/") === 0 ? "/api/sandbox" + path.slice(4) : path;
  }

  function show(output, parts) {
    output.replaceChildren();
    parts.forEach(function (part) { output.appendChild(part); });
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function send(form) {
    var output = form.querySelector(".try-output");
    var path = form.getAttribute("data-path");
    var query = new URLSearchParams();
    var headers = {};
    var missing = [];
    form.querySelectorAll("input[data-in]").forEach(function (input) {
      var value = input.value.trim();
      var where = input.getAttribute("data-in");
      if (!value) {
        if (input.required) { missing.push(input.name); }
        return;
      }
      if (where === "path") { path = path.replace("{" + input.name + "}", encodeURIComponent(value)); }
      else if (where === "query") { query.append(input.name, value); }
      else if (where === "header") { headers[input.name] = value; }
    });
    if (missing.length) {
      show(output, [el("p", "notice notice-error", "Fill in " + missing.join(", ") + " first.")]);
      return;
    }
    var init = { method: form.getAttribute("data-method"), headers: headers, credentials: "omit" };
    var body = form.querySelector("textarea[name=body]");
    if (body && init.method !== "GET" && init.method !== "DELETE") {
      try { JSON.parse(body.value); } catch (err) {
        show(output, [el("p", "notice notice-error", "The body is not valid JSON: " + err.message)]);
        return;
      }
      headers["Content-Type"] = "application/json";
      init.body = body.value;
    }
    if (form.getAttribute("data-auth") === "key") {
      if (!apiKey) {
        show(output, [el("p", "notice notice-warn", "Paste your key into “Use this key” at the top of the page first.")]);
        document.getElementById("try-key").focus();
        return;
      }
      headers["x-api-key"] = apiKey;
    }
    var url = sandboxPath(path) + (query.toString() ? "?" + query.toString() : "");
    show(output, [el("p", "hint", init.method + " " + url + " …")]);
    fetch(url, init).then(function (response) {
      return response.text().then(function (text) {
        var pretty = text;
        try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (ignored) { /* not JSON */ }
        var line = el("p", "run-status");
        line.appendChild(el("span", "status status-" + String(response.status)[0] + "xx", String(response.status)));
        line.appendChild(document.createTextNode(" " + init.method + " " + url));
        var requestId = response.headers.get("Request-Id");
        if (requestId) { line.appendChild(el("span", "hint", " · " + requestId)); }
        var pre = el("pre", "", pretty);
        pre.tabIndex = 0;
        pre.setAttribute("role", "region");
        pre.setAttribute("aria-label", "Response body");
        show(output, [line, pre]);
      });
    }, function () {
      show(output, [el("p", "notice notice-error", "Could not reach the server. Check your connection and try again.")]);
    });
  }

  // "Try this again": open the operation's try-it with the logged call's values.
  function prefillFromHash() {
    var hash = decodeURIComponent(window.location.hash.slice(1) ? window.location.hash.slice(1).split("&")[0] : "");
    if (hash.indexOf("op-") !== 0) { return; }
    var section = document.getElementById(hash);
    if (!section) { return; }
    var rest = window.location.hash.slice(1).split("&").slice(1).join("&");
    var values = new URLSearchParams(rest);
    var tryBox = section.querySelector(".try-it");
    if (tryBox && window.location.hash.indexOf("&") !== -1) {
      tryBox.open = true;
      values.forEach(function (value, name) {
        var field = tryBox.querySelector('[name="' + CSS.escape(name) + '"]');
        if (field) { field.value = value; }
      });
    }
    section.scrollIntoView();
    var heading = section.querySelector("h3");
    if (heading) { heading.tabIndex = -1; heading.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-needs-js]").forEach(function (node) { node.hidden = false; });
    document.querySelectorAll("form[data-try]").forEach(function (form) {
      var target = form.querySelector(".try-target");
      var path = form.getAttribute("data-path");
      if (target && sandboxPath(path) !== path) { target.textContent = "Goes to " + sandboxPath(path); }
      form.addEventListener("submit", function (evt) { evt.preventDefault(); send(form); });
    });
    var form = document.getElementById("try-key-form");
    if (form) {
      var input = document.getElementById("try-key");
      form.addEventListener("submit", function (evt) {
        evt.preventDefault();
        var value = input.value.trim();
        if (!KEY.test(value)) {
          input.setAttribute("aria-invalid", "true");
          status("That does not look like a Levqor key (lvq_, 32 hex characters, _ and 6 characters).");
          return;
        }
        input.removeAttribute("aria-invalid");
        apiKey = value;
        input.value = "";
        status("Using key " + masked(value) + " for “Try it” on this page until you leave it.");
      });
      document.getElementById("try-key-clear").addEventListener("click", function () {
        apiKey = "";
        input.value = "";
        status("Key forgotten.");
      });
    }
    prefillFromHash();
  });
  window.addEventListener("hashchange", prefillFromHash);
})();
