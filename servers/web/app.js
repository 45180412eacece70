// The trader page script; replaced by the page itself (servers/web).
