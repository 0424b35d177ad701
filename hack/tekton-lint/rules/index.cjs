'use strict';
// tekton-lint rule: a `script:` must not contain `$(`. Tekton substitutes $(params.x),
// $(tasks.t.results.r), $(context...) into the script's text before the shell reads it,
// so a webhook-controlled value (branch, commit message, repo name) becomes shell code.
// Values must reach scripts as env or args instead. Shell command substitution `$(cmd)`
// is reported too: it cannot be told apart reliably, and the bundle's scripts don't need it.

function* holdersOfScripts(node) {
  if (Array.isArray(node)) {
    for (const item of node) yield* holdersOfScripts(item);
  } else if (node && typeof node === 'object') {
    if (typeof node.script === 'string') yield node;
    for (const value of Object.values(node)) yield* holdersOfScripts(value);
  }
}

function noSubstitutionInScript(docs, _tekton, report) {
  for (const doc of docs || []) {
    if (!doc || typeof doc.apiVersion !== 'string' || !doc.apiVersion.includes('tekton.dev/')) continue;
    for (const holder of holdersOfScripts(doc)) {
      const found = holder.script.match(/\$\([^)\n]*\)?/g);
      if (!found) continue;
      const name = (doc.metadata && (doc.metadata.name || doc.metadata.generateName)) || '?';
      report(
        `${doc.kind} ${name}, step ${holder.name || '?'}: script contains ${found.join(', ')}; ` +
          'pass the value as env or args and read it as a shell variable',
        holder,
        'script',
      );
    }
  }
}

module.exports = {
  rules: [{ name: 'no-substitution-in-script', reportDefault: 'error', ruleFn: noSubstitutionInScript }],
};
