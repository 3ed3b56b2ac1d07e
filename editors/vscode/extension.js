// The VS Code extension: starts `ahtsgd lsp` for .aht recipes and restarts it when the
// `ahtsgd.path` setting changes. Highlighting comes from syntaxes/aht.tmLanguage.json.
'use strict';

const vscode = require('vscode');
const { LanguageClient, TransportKind } = require('vscode-languageclient/node');
const { serverCommand, documentSelector } = require('./server');

/** @type {LanguageClient | undefined} */
let client;

function start() {
  const { command, args } = serverCommand(vscode.workspace.getConfiguration('ahtsgd'));
  const executable = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient(
    'ahtsgd',
    'ahtsgd recipes',
    { run: executable, debug: executable },
    { documentSelector },
  );
  return client.start().catch((error) => {
    vscode.window.showErrorMessage(
      `Could not start \`${command} lsp\`: ${error.message}. Install ahtsgd (see its README) ` +
        'or set `ahtsgd.path` to the executable.',
    );
  });
}

async function stop() {
  if (client) {
    const running = client;
    client = undefined;
    await running.stop();
  }
}

/** @param {vscode.ExtensionContext} context */
function activate(context) {
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration('ahtsgd.path')) {
        await stop();
        await start();
      }
    }),
  );
  return start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
