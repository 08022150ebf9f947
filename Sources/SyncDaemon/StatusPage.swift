import Foundation

/// The status page at `/`: plain HTML rendered from the status report and the recent events, no
/// script — it reloads itself every few seconds (`<meta http-equiv="refresh">`) and draws
/// progress with `<progress>`. Elements carry `id`s and `data-` attributes so a test (or a
/// scraper) can read the rendered DOM: `#folders tr[data-folder]` with `data-state`,
/// `#peers tr[data-device]`, `#changes li`, `#conflicts li`, `#errors li`.
enum StatusPage {
    /// Recent events listed per section.
    static let listed = 20

    static func render(_ report: StatusReport, recent: [DaemonEvent], now: Double, refreshSeconds: Int = 3) -> String {
        var html = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>syncd \(escape(String(report.device.prefix(7))))</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
            h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.4em 0 .4em}
            table{border-collapse:collapse;width:100%;background:#fff} td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
            th{background:#eee;font-weight:600} .num{text-align:right;font-variant-numeric:tabular-nums}
            .state{font-weight:600} .s-error{color:#b00} .s-syncing{color:#a60} .s-in-sync{color:#070} .s-idle,.s-scanning,.s-unknown{color:#555}
            progress{width:12em} small,.muted{color:#666} ul{background:#fff;padding:.5em 2em;margin:0} li{margin:.15em 0}
            code{font-size:.95em}
            </style></head><body>
            <h1>syncd <code id="device">\(escape(report.device))</code></h1>
            <div class="muted">version \(escape(report.version))\(report.listen.map { " · sessions on " + escape($0) } ?? "")\(membersLine(report))</div>

            """
        html += "<h2>Folders</h2>\n<table id=\"folders\"><tr><th>folder</th><th>state</th><th class=\"num\">files</th><th class=\"num\">size</th><th>progress</th><th>rate · ETA</th></tr>\n"
        if report.folders.isEmpty { html += "<tr><td colspan=\"6\" class=\"muted\">no folders shared</td></tr>\n" }
        for f in report.folders {
            let state = f.state
            html += "<tr data-folder=\"\(escape(f.path))\" data-state=\"\(escape(state))\">"
            html += "<td><code>\(escape(f.path))</code><br><small>\(escape(f.access)) · sequence \(f.sequence)</small></td>"
            html += "<td class=\"state s-\(state.replacingOccurrences(of: " ", with: "-"))\">\(escape(state))</td>"
            html += "<td class=\"num\">\(f.localFiles)</td><td class=\"num\">\(escape(HumanUnits.bytes(f.localBytes)))</td>"
            if let p = f.progress {
                html += "<td><progress max=\"100\" value=\"\(String(format: "%.1f", p.percent))\">\(String(format: "%.1f", p.percent)) %</progress> "
                html += "<span class=\"percent\">\(String(format: "%.1f", p.percent)) %</span><br><small>\(p.doneFiles) of \(p.totalFiles) files, \(escape(HumanUnits.bytes(p.doneBytes))) of \(escape(HumanUnits.bytes(p.totalBytes)))</small></td>"
                let rate = p.bytesPerSecond.map { HumanUnits.bytes(Int64($0)) + "/s" } ?? "—"
                let eta = p.etaSeconds.map { "ETA " + HumanUnits.duration($0) } ?? ""
                html += "<td>\(escape(rate))<br><small>\(escape(eta))</small></td>"
            } else {
                let done = state == "in sync" ? 100.0 : (state == "idle" ? 100.0 : 0)
                html += "<td><progress max=\"100\" value=\"\(done)\"></progress> <span class=\"percent muted\">\(state == "syncing" ? "checking" : "nothing pending")</span></td><td class=\"muted\">—</td>"
            }
            html += "</tr>\n"
        }
        html += "</table>\n"

        html += "<h2>Peers</h2>\n<table id=\"peers\"><tr><th>folder</th><th>device</th><th>state</th><th class=\"num\">rtt</th><th>lag</th><th>last seen</th></tr>\n"
        let peers = report.folders.flatMap { f in (f.peers ?? []).map { (f, $0) } }
        if peers.isEmpty { html += "<tr><td colspan=\"6\" class=\"muted\">no peers known yet</td></tr>\n" }
        for (f, p) in peers {
            let state = p.connected ? "connected" : (p.gossip.map { $0 == "alive" ? "connecting" : $0 } ?? "not connected")
            html += "<tr data-device=\"\(escape(p.device))\" data-folder=\"\(escape(f.path))\" data-connected=\"\(p.connected)\">"
            html += "<td><code>\(escape(f.path))</code></td><td title=\"\(escape(p.device))\"><code>\(escape(p.name ?? String(p.device.prefix(7))))</code></td>"
            html += "<td>\(escape(state))</td><td class=\"num\">\(p.rttMs.map { String(format: "%.1f ms", $0) } ?? "—")</td>"
            var lag = "—"
            if p.connected {
                let send = p.sendLag ?? 0, receive = p.receiveLag ?? 0
                lag = send == 0 && receive == 0 ? "caught up"
                    : "\(send) to send, \(receive) to apply" + (p.lagSeconds.map { " (" + HumanUnits.duration($0) + ")" } ?? "")
            }
            html += "<td>\(escape(lag))</td>"
            let seen = p.connected ? "now" : (p.lastSeen.map { HumanUnits.duration(max(0, now - $0)) + " ago" } ?? "not since start")
            html += "<td>\(escape(seen))</td></tr>\n"
        }
        html += "</table>\n"

        let changes = recent.filter { $0.kind == .localChangeIndexed || $0.kind == .batchApplied }.suffix(listed).reversed()
        html += "<h2>Recent changes</h2>\n<ul id=\"changes\">\n"
        if changes.isEmpty { html += "<li class=\"muted\">none since the daemon started</li>\n" }
        for e in changes {
            let paths = e.paths ?? []
            let shown = paths.prefix(5).map { "<code>\(escape($0))</code>" }.joined(separator: ", ") + (paths.count > 5 ? " and \(paths.count - 5) more" : "")
            let origin = e.kind == .batchApplied ? "from \(escape(String((e.device ?? "?").prefix(7))))" : "local"
            html += "<li data-kind=\"\(e.kind.rawValue)\"><small>\(escape(clock(e.time)))</small> \(escape(e.folder)): \(origin), \(paths.count) path\(paths.count == 1 ? "" : "s"): \(shown)</li>\n"
        }
        html += "</ul>\n"

        let conflicts = recent.filter { $0.kind == .conflict }.suffix(listed).reversed()
        html += "<h2>Conflicts</h2>\n<ul id=\"conflicts\">\n"
        if conflicts.isEmpty { html += "<li class=\"muted\">none since the daemon started</li>\n" }
        for e in conflicts {
            for path in (e.paths ?? []).prefix(listed) {
                html += "<li><small>\(escape(clock(e.time)))</small> \(escape(e.folder)): <code>\(escape(path))</code></li>\n"
            }
        }
        html += "</ul>\n"

        html += "<h2>Errors</h2>\n<ul id=\"errors\">\n"
        var any = false
        for f in report.folders {
            if f.state == "error", let e = f.error { html += "<li data-current=\"true\">\(escape(f.path)) is paused: \(escape(e))</li>\n"; any = true }
            if let e = f.pullError { html += "<li data-current=\"true\">\(escape(f.path)): not applied (retrying): \(escape(e))</li>\n"; any = true }
        }
        for e in recent.filter({ $0.kind == .error }).suffix(listed).reversed() {
            html += "<li><small>\(escape(clock(e.time)))</small> \(escape(e.folder)): \(escape(e.message ?? ""))</li>\n"
            any = true
        }
        if !any { html += "<li class=\"muted\">none</li>\n" }
        html += "</ul>\n<p class=\"muted\"><small>Reloads every \(refreshSeconds) s. JSON: <a href=\"api/status\">/api/status</a> · events: /api/events · <a href=\"metrics\">/metrics</a></small></p>\n</body></html>\n"
        return html
    }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    private static func membersLine(_ report: StatusReport) -> String {
        guard let members = report.members, !members.isEmpty else { return "" }
        return " · gossip: " + members.sorted { $0.key < $1.key }.map { "\($0.value) \(escape($0.key))" }.joined(separator: ", ")
    }

    /// The time of day in UTC, "06:42:10".
    private static func clock(_ time: Double) -> String {
        let s = Int(time) % 86400
        return String(format: "%02d:%02d:%02d UTC", s / 3600, s % 3600 / 60, s % 60)
    }
}

/// Sizes and durations as `syncd status` and the status page write them.
public enum HumanUnits {
    /// 1536 → "1.5 KiB".
    public static func bytes(_ n: Int64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(n) bytes" : "\(String(format: "%.1f", value)) \(units[unit])"
    }

    /// 75 → "1 min 15 s".
    public static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        if s < 86400 { return "\(s / 3600) h \(s % 3600 / 60) min" }
        return "\(s / 86400) d \(s % 86400 / 3600) h"
    }
}
