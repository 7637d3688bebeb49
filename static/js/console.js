// Behaviour every console page shares. Kept out of the HTML: the Content-Security-Policy refuses
// inline scripts and event handlers.
(function () {
  "use strict";

  // A <select data-submit-on-change> submits its form as soon as a choice is made (scope pickers).
  document.addEventListener("change", function (event) {
    const select = event.target;
    if (select.matches("select[data-submit-on-change]") && select.form) {
      select.form.requestSubmit();
    }
  });
})();
