// Runs after require.js and before the Jupyter widgets HTML manager
// (embed-amd.js); see nb_ipywidgets_js in _config.yml.
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (here && window.require && window.require.config) {
    // embed-amd.js defines several AMD modules, and each one loads the Font
    // Awesome fonts of the widget CSS relative to its own module URL, which
    // RequireJS derives from the module name (by default relative to the
    // page). Map every name into the book's copy of the manager, where the
    // fonts are (see tools/build_book.py).
    var dir = new URL("offline/html-manager/", here).href;
    var paths = {"@jupyter-widgets/html-manager/dist": dir.replace(/\/$/, "")};
    ["base", "base7", "controls", "controls7", "output", "html-manager"].forEach(function (name) {
      paths["@jupyter-widgets/" + name] = dir + name;
    });
    window.require.config({paths: paths});
  }
  // The widgets typeset math in labels with the MathJax 2 API
  // (MathJax.Hub.Queue); the book loads MathJax 3, so translate.
  window.addEventListener("load", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") return;
    mj.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) {
            var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
            ready.then(function () { return mj.typesetPromise([job[2]]); });
          }
        });
      },
    };
  });
})();
