//! The server's loop over a connection: open documents held in memory, diagnostics published
//! on every open and change, requests answered from [`super::analysis`]. A request whose
//! handler fails is answered with an error; the server goes on.

use super::document::Document;
use super::position::LineIndex;
use super::{analysis, names, values};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest,
    PrepareRenameRequest, References, Rename, Request as _,
};
use lsp_types::{
    CompletionOptions, CompletionParams, CompletionResponse, DocumentFormattingParams,
    DocumentSymbolParams, DocumentSymbolResponse, Hover, HoverContents, HoverParams,
    HoverProviderCapability, MarkupContent, MarkupKind, OneOf, PublishDiagnosticsParams,
    ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind, Uri,
};
use std::collections::HashMap;

/// What the server advertises.
pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(["=", "{", "[", ",", "(", " "].map(String::from).to_vec()),
            ..Default::default()
        }),
        document_formatting_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        definition_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(lsp_types::CodeActionProviderCapability::Simple(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Right(lsp_types::RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: Default::default(),
        })),
        ..Default::default()
    }
}

/// The open documents and where their diagnostics were published.
#[derive(Default)]
struct State {
    docs: HashMap<Uri, String>,
    /// For each open document, the other files (its imports) it published diagnostics to, so
    /// they are cleared when they are fixed.
    published: HashMap<Uri, Vec<Uri>>,
}

/// Serves one client on `conn` until it asks to shut down and exits. Returns an error only
/// when the connection itself fails.
pub fn serve(conn: &Connection) -> Result<(), lsp_server::ProtocolError> {
    let caps = serde_json::to_value(capabilities()).unwrap_or_default();
    conn.initialize(caps)?;
    let mut state = State::default();
    // after `shutdown` only `exit` is expected; a client that asks again (Neovim 0.7 does when
    // it quits) gets an error, as the protocol says, and the server waits for `exit`
    let mut shut_down = false;
    for msg in &conn.receiver {
        match msg {
            Message::Request(req) if req.method == "shutdown" => {
                let response = if shut_down {
                    Response::new_err(
                        req.id,
                        ErrorCode::InvalidRequest as i32,
                        "the server is shut down already".into(),
                    )
                } else {
                    Response::new_ok(req.id, serde_json::Value::Null)
                };
                shut_down = true;
                send(conn, Message::Response(response));
            }
            Message::Request(req) if shut_down => send(
                conn,
                Message::Response(Response::new_err(
                    req.id,
                    ErrorCode::InvalidRequest as i32,
                    "the server is shut down".into(),
                )),
            ),
            Message::Notification(n) if n.method == "exit" => return Ok(()),
            Message::Request(req) => {
                let id = req.id.clone();
                let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    answer(&state, req)
                }))
                .unwrap_or_else(|_| {
                    Response::new_err(
                        id,
                        ErrorCode::InternalError as i32,
                        "the server failed on this request (a bug: please report it with the document)"
                            .into(),
                    )
                });
                send(conn, Message::Response(response));
            }
            Message::Notification(n) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    notified(conn, &mut state, n)
                }));
            }
            Message::Response(_) => {}
        }
    }
    Ok(())
}

fn send(conn: &Connection, msg: Message) {
    // a closed channel means the client is gone; the loop ends with it
    let _ = conn.sender.send(msg);
}

fn notified(conn: &Connection, state: &mut State, n: Notification) {
    let uri = match n.method.as_str() {
        DidOpenTextDocument::METHOD => {
            let Ok(p) = serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params)
            else {
                return;
            };
            state
                .docs
                .insert(p.text_document.uri.clone(), p.text_document.text);
            p.text_document.uri
        }
        DidChangeTextDocument::METHOD => {
            let Ok(p) = serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params)
            else {
                return;
            };
            let doc = state.docs.entry(p.text_document.uri.clone()).or_default();
            for change in p.content_changes {
                match change.range {
                    // full sync is advertised; a client that sends ranges anyway is followed
                    Some(r) => {
                        let idx = LineIndex::new(doc);
                        let (a, b) = (idx.offset(doc, r.start), idx.offset(doc, r.end));
                        let (a, b) = (a.min(b), a.max(b));
                        doc.replace_range(a..b, &change.text);
                    }
                    None => *doc = change.text,
                }
            }
            p.text_document.uri
        }
        DidCloseTextDocument::METHOD => {
            let Ok(p) = serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params)
            else {
                return;
            };
            state.docs.remove(&p.text_document.uri);
            let mut cleared = state
                .published
                .remove(&p.text_document.uri)
                .unwrap_or_default();
            cleared.push(p.text_document.uri);
            for u in cleared {
                publish(conn, u, Vec::new());
            }
            return;
        }
        _ => return,
    };
    let Some(text) = state.docs.get(&uri) else {
        return;
    };
    let found = analysis::diagnostics(&uri, text);
    let now: Vec<Uri> = found.iter().skip(1).map(|(u, _)| u.clone()).collect();
    for old in state.published.get(&uri).into_iter().flatten() {
        if !now.contains(old) {
            publish(conn, old.clone(), Vec::new());
        }
    }
    state.published.insert(uri, now);
    for (u, list) in found {
        publish(conn, u, list);
    }
}

fn publish(conn: &Connection, uri: Uri, diagnostics: Vec<lsp_types::Diagnostic>) {
    let params = PublishDiagnosticsParams::new(uri, diagnostics, None);
    send(
        conn,
        Message::Notification(Notification::new(PublishDiagnostics::METHOD.into(), params)),
    );
}

fn answer(state: &State, req: Request) -> Response {
    let id = req.id.clone();
    let result = match req.method.as_str() {
        HoverRequest::METHOD => parse::<HoverParams>(&req).map(|p| {
            let pos = p.text_document_position_params;
            let text = doc(state, &pos.text_document.uri);
            let offset = LineIndex::new(text).offset(text, pos.position);
            let checked = Document::check(&pos.text_document.uri, text);
            let parts: Vec<String> = [
                analysis::hover(text, offset),
                values::hover(&checked, offset),
            ]
            .into_iter()
            .flatten()
            .collect();
            let hover = (!parts.is_empty())
                .then(|| parts.join("\n\n---\n\n"))
                .map(|value| Hover {
                    contents: HoverContents::Markup(MarkupContent {
                        kind: MarkupKind::Markdown,
                        value,
                    }),
                    range: None,
                });
            serde_json::to_value(hover)
        }),
        Completion::METHOD => parse::<CompletionParams>(&req).map(|p| {
            let pos = p.text_document_position;
            let text = doc(state, &pos.text_document.uri);
            let offset = LineIndex::new(text).offset(text, pos.position);
            serde_json::to_value(CompletionResponse::Array(analysis::completion(
                text, offset,
            )))
        }),
        Formatting::METHOD => parse::<DocumentFormattingParams>(&req)
            .map(|p| serde_json::to_value(analysis::format(doc(state, &p.text_document.uri)))),
        DocumentSymbolRequest::METHOD => parse::<DocumentSymbolParams>(&req).map(|p| {
            serde_json::to_value(DocumentSymbolResponse::Nested(analysis::symbols(doc(
                state,
                &p.text_document.uri,
            ))))
        }),
        GotoDefinition::METHOD => parse::<lsp_types::GotoDefinitionParams>(&req).map(|p| {
            let pos = p.text_document_position_params;
            let (uri, text, offset) = located(state, &pos);
            serde_json::to_value(
                names::definition(uri, text, offset).map(lsp_types::GotoDefinitionResponse::Scalar),
            )
        }),
        CodeActionRequest::METHOD => parse::<lsp_types::CodeActionParams>(&req).map(|p| {
            let text = doc(state, &p.text_document.uri);
            let actions: Vec<lsp_types::CodeActionOrCommand> =
                analysis::quick_fixes(&p.text_document.uri, text, p.range)
                    .into_iter()
                    .map(lsp_types::CodeActionOrCommand::CodeAction)
                    .collect();
            serde_json::to_value(actions)
        }),
        References::METHOD => parse::<lsp_types::ReferenceParams>(&req).map(|p| {
            let (uri, text, offset) = located(state, &p.text_document_position);
            serde_json::to_value(names::references(
                uri,
                text,
                offset,
                p.context.include_declaration,
            ))
        }),
        PrepareRenameRequest::METHOD => {
            parse::<lsp_types::TextDocumentPositionParams>(&req).map(|p| {
                let (uri, text, offset) = located(state, &p);
                serde_json::to_value(
                    names::name_range(uri, text, offset)
                        .map(lsp_types::PrepareRenameResponse::Range),
                )
            })
        }
        Rename::METHOD => match parse::<lsp_types::RenameParams>(&req) {
            Ok(p) => {
                let (uri, text, offset) = located(state, &p.text_document_position);
                match names::rename(uri, text, offset, &p.new_name) {
                    Ok(edit) => Ok(serde_json::to_value(edit)),
                    Err(e) => {
                        return Response::new_err(
                            id,
                            ErrorCode::InvalidParams as i32,
                            format!("cannot rename: {e}"),
                        );
                    }
                }
            }
            Err(e) => Err(e),
        },
        _ => {
            return Response::new_err(
                id,
                ErrorCode::MethodNotFound as i32,
                format!("`{}` is not supported", req.method),
            );
        }
    };
    match result {
        Ok(Ok(value)) => Response::new_ok(id, value),
        Ok(Err(e)) | Err(e) => {
            Response::new_err(id, ErrorCode::InvalidParams as i32, e.to_string())
        }
    }
}

/// The document, its text and the byte offset of a position in it.
fn located<'s>(
    state: &'s State,
    pos: &'s lsp_types::TextDocumentPositionParams,
) -> (&'s Uri, &'s str, usize) {
    let text = doc(state, &pos.text_document.uri);
    let offset = LineIndex::new(text).offset(text, pos.position);
    (&pos.text_document.uri, text, offset)
}

/// The text of an open document (empty for one the client never opened).
fn doc<'s>(state: &'s State, uri: &Uri) -> &'s str {
    state.docs.get(uri).map_or("", String::as_str)
}

fn parse<P: serde::de::DeserializeOwned>(req: &Request) -> Result<P, serde_json::Error> {
    serde_json::from_value(req.params.clone())
}
