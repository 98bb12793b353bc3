// /docs/api: Swagger UI (swagger-ui-dist from npm, served by the app) on the live spec.
// "Try it out" sends the developer's own key, pasted on this page and kept in this tab's memory
// only, and sends /api/v1 calls to their /api/sandbox/v1 twins.
(function () {
  "use strict";

  var apiKey = "";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function toSandbox(request) {
    var url = new URL(request.url, window.location.origin);
    if (url.origin !== window.location.origin) { return request; }
    if (url.pathname.indexOf("/api/v1/") === 0) {
      url.pathname = "/api/sandbox" + url.pathname.slice(4);
      request.url = url.toString();
    }
    if (apiKey && url.pathname !== "/api/openapi.json") {
      request.headers["x-api-key"] = apiKey;
    }
    // Session-authenticated operations (the key endpoints) need the page's CSRF token.
    request.headers["X-CSRFToken"] = csrfToken();
    return request;
  }

  function status(text) {
    var box = document.getElementById("try-key-status");
    if (box) {
      box.textContent = text;
      box.hidden = !text;
    }
  }

  // Accessibility fixes to Swagger UI's markup, made here rather than in a fork:
  // - An operation's summary is a <button> with the deep link (an <a>) inside it: two controls in
  //   one, which screen readers and axe (nested-interactive) reject. The plugin renders an
  //   operation's deep link as plain text; the button still opens it, and deepLinking still puts
  //   #/Tag/operation in the address bar and opens the operation a shared address names.
  //   A tag's own link (path without "/") is not inside a button and stays.
  function accessibleSummaries(system) {
    return {
      wrapComponents: {
        DeepLink: function (Original) {
          return function (props) {
            if (props.path && props.path.indexOf("/") !== -1) {
              return system.React.createElement("span", null, props.text);
            }
            return system.React.createElement(Original, props);
          };
        },
      },
    };
  }

  // - Controls Swagger UI renders with no name: the server <select> sits in an empty <label>.
  //   A React re-render keeps attributes it did not set, and the observer names new ones.
  // - Example and response bodies scroll sideways and down, but a keyboard cannot reach them: each
  //   becomes a named region in the tab order, as the portal's own code blocks are.
  var UNNAMED = [["select#servers", "Server"]];
  function nameControls(root) {
    UNNAMED.forEach(function (pair) {
      root.querySelectorAll(pair[0] + ":not([aria-label])").forEach(function (el) {
        el.setAttribute("aria-label", pair[1]);
      });
    });
    root.querySelectorAll(".highlight-code > pre:not([tabindex])").forEach(function (el) {
      el.setAttribute("tabindex", "0");
      el.setAttribute("role", "region");
      el.setAttribute("aria-label", el.closest(".responses-wrapper, .live-responses-table") ? "Response body" : "Example");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var host = document.getElementById("swagger-ui");
    if (!host || typeof window.SwaggerUIBundle !== "function") { return; }
    new MutationObserver(function () { nameControls(host); }).observe(host, { childList: true, subtree: true });
    var ui = window.SwaggerUIBundle({
      url: host.getAttribute("data-spec-url"),
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [window.SwaggerUIBundle.presets.apis],
      plugins: [accessibleSummaries],
      // Its highlighting themes colour JSON below 4.5:1 contrast on their dark background (agate:
      // #d36363 on #333); plain text in Swagger UI's own dark box reads at full contrast.
      syntaxHighlight: { activated: false },
      layout: "BaseLayout",
      docExpansion: "list",
      defaultModelsExpandDepth: 0,
      tryItOutEnabled: host.hasAttribute("data-signed-in"),
      requestInterceptor: toSandbox,
    });

    var form = document.getElementById("try-key-form");
    if (!form) { return; }
    var input = document.getElementById("try-key");
    form.addEventListener("submit", function (evt) {
      evt.preventDefault();
      var value = input.value.trim();
      if (!/^lvq_[0-9a-f]{32}_[0-9A-Za-z]{6}$/.test(value)) {
        input.setAttribute("aria-invalid", "true");
        status("That does not look like a Levqor key (lvq_ followed by 32 hex characters, _ and 6 characters).");
        return;
      }
      input.removeAttribute("aria-invalid");
      apiKey = value;
      ui.preauthorizeApiKey("ApiKeyAuth", value);
      input.value = "";
      status("Key set for this tab: “Try it out” now calls the sandbox as you (ending …" + value.slice(-4) + ").");
    });
    document.getElementById("try-key-clear").addEventListener("click", function () {
      apiKey = "";
      input.value = "";
      ui.preauthorizeApiKey("ApiKeyAuth", "");
      status("Key forgotten.");
    });
  });
})();
