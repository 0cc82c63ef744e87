// xterm.js writes its geometry and colours into <style> elements it creates. The page's
// Content-Security-Policy admits only <style> elements carrying this response's nonce, so every
// <style> created from script gets it (scripts themselves only come from this origin).
(() => {
  const meta = document.querySelector('meta[name="boxlite-style-nonce"]');
  const nonce = meta ? meta.getAttribute('content') : '';
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (tag, options) {
    const el = create.call(this, tag, options);
    if (nonce && String(tag).toLowerCase() === 'style') el.setAttribute('nonce', nonce);
    return el;
  };
})();
