// MathJax settings for pymdownx.arithmatex (generic mode). Loaded before the vendored bundle
// (javascripts/mathjax/es5/tex-mml-chtml.js), which reads them when it starts.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Material emits document$ for the first page and, with instant navigation, for every page
// swapped in without a reload. The first emission can come before the bundle has run (then
// MathJax is still the settings object above and its startup typesets the page by itself), so
// typeset again only once MathJax is really there.
document$.subscribe(() => {
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.output || typeof mj.typesetPromise !== "function") {
    return;
  }
  mj.startup.output.clearCache();
  mj.typesetClear();
  mj.texReset();
  mj.typesetPromise();
});
