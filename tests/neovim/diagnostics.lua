-- Run by tests/neovim.rs inside `nvim --headless` (Neovim 0.7's API: start_client and
-- buf_attach_client): opens $RECIPE with `ahtsgd lsp` ($AHTSGD) as its language server, waits
-- for the diagnostics, asks for a hover and writes what it got to $OUT, one line each:
-- `diag LINE COL END_LINE END_COL CODE MESSAGE` (0-based; columns in bytes, as Neovim keeps
-- them after converting the server's UTF-16 ones) and `hover TEXT`.
local out = {}
local function finish()
  vim.fn.writefile(out, os.getenv("OUT"))
  vim.cmd("qa!")
end
vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("RECIPE")))
local buf = vim.api.nvim_get_current_buf()
local client = vim.lsp.start_client({
  name = "ahtsgd",
  cmd = { os.getenv("AHTSGD"), "lsp" },
  root_dir = vim.fn.fnamemodify(os.getenv("RECIPE"), ":h"),
})
if not client then
  table.insert(out, "error the client did not start")
  finish()
end
vim.lsp.buf_attach_client(buf, client)
local got = vim.wait(20000, function()
  return #vim.diagnostic.get(buf) > 0
end, 50)
if not got then
  table.insert(out, "error no diagnostics within 20 s")
end
for _, d in ipairs(vim.diagnostic.get(buf)) do
  local code = d.code or (d.user_data and d.user_data.lsp and d.user_data.lsp.code) or "?"
  local message = d.message:gsub("\n", " | ")
  table.insert(out, string.format("diag %d %d %d %d %s %s", d.lnum, d.col, d.end_lnum, d.end_col, code, message))
end
local line = tonumber(os.getenv("HOVER_LINE"))
local character = tonumber(os.getenv("HOVER_CHARACTER"))
local results = vim.lsp.buf_request_sync(buf, "textDocument/hover", {
  textDocument = { uri = vim.uri_from_bufnr(buf) },
  position = { line = line, character = character },
}, 10000)
for _, r in pairs(results or {}) do
  if r.result and r.result.contents then
    table.insert(out, "hover " .. (r.result.contents.value or ""):gsub("\n", " | "))
  end
end
vim.lsp.stop_client(client)
finish()
