/* Shared helpers of sidecar's own pages. Plain ES2017, no library, no network but
   the daemon itself. Elements are built with el(), never from HTML strings, so that
   nothing the daemon reports can inject markup. */
"use strict";

var sidecar = (function () {
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === null || value === undefined || value === false) return;
        if (name === "text") node.textContent = String(value);
        else if (name === "class") node.className = value;
        else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
        else node.setAttribute(name, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function words(name) {
    return String(name).replace(/_/g, " ").replace(/-/g, " ");
  }

  function copyButton(getText) {
    var button = el("button", { type: "button", class: "copy", text: "Copy" });
    button.addEventListener("click", function () {
      var text = getText();
      function done(ok) {
        button.textContent = ok ? "Copied" : "Select and copy";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      } else {
        done(false);
      }
    });
    return button;
  }

  return { el: el, append: append, clear: clear, words: words, copyButton: copyButton };
})();
