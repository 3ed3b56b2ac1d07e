// How the extension starts the language server. Kept apart from extension.js, which needs
// VS Code's `vscode` module, so that the tests can run it under plain Node.
'use strict';

/**
 * The command that serves recipes over standard input and output.
 * @param {{ get(key: string): unknown }} config the `ahtsgd` section of the settings
 * @returns {{ command: string, args: string[] }}
 */
function serverCommand(config) {
  const configured = config.get('path');
  const command = typeof configured === 'string' && configured.trim() !== '' ? configured.trim() : 'ahtsgd';
  return { command, args: ['lsp'] };
}

/** The documents the server is given: `.aht` recipes on disk and unsaved ones. */
const documentSelector = [
  { scheme: 'file', language: 'aht' },
  { scheme: 'untitled', language: 'aht' },
];

module.exports = { serverCommand, documentSelector };
