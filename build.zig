// The only build description. Zig is our C toolchain; C libraries come
// from Debian's -dev packages. Zig version pinned in tools/dev/bootstrap.
//
//   zig build                          debug build of spool, tests and tools
//   zig build -Doptimize=ReleaseFast   what `tools/dev/serve` and benchmarks use
//   zig build -Dsanitize=true          AddressSanitizer + UBSan (the test build)
//   zig build test                     builds and runs the unit tests
const std = @import("std");

const system_libs = [_][]const u8{
    "lmdb", "uv", "msgpackc", "h2o", "http_parser", "ssl", "crypto", "jansson", "xxhash", "zstd", "yaml", "git2", "pcre2-8", "pthread", "m",
};
// The tests and benchmarks use libcurl as an independent client; the
// product does not link it (it costs ~3 MB resident per process).
const test_libs = [_][]const u8{"curl"};

// Sanitizer and libFuzzer runtimes come from Debian's libclang-rt-14-dev:
// Zig ships neither, and LLVM keeps their ABI stable across versions.
const rt_dir = "/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/";
const asan_runtime = rt_dir ++ "libclang_rt.asan-x86_64.a";
const fuzzer_runtime = rt_dir ++ "libclang_rt.fuzzer-x86_64.a";

fn collectC(b: *std.Build, dir: []const u8, skip: []const []const u8) []const []const u8 {
    var list = std.ArrayList([]const u8).init(b.allocator);
    var d = b.build_root.handle.openDir(dir, .{ .iterate = true }) catch return list.items;
    defer d.close();
    var walker = d.walk(b.allocator) catch @panic("oom");
    defer walker.deinit();
    outer: while (walker.next() catch null) |entry| {
        if (entry.kind != .file or !std.mem.endsWith(u8, entry.path, ".c")) continue;
        const path = b.fmt("{s}/{s}", .{ dir, entry.path });
        for (skip) |s| if (std.mem.startsWith(u8, path, s)) continue :outer;
        list.append(b.dupe(path)) catch @panic("oom");
    }
    std.mem.sort([]const u8, list.items, {}, struct {
        fn lt(_: void, a: []const u8, c: []const u8) bool {
            return std.mem.lessThan(u8, a, c);
        }
    }.lt);
    return list.items;
}

// Zig 0.14's cache for a whole library or program lists the headers of only
// the C files it compiled in that run, so an edit to a header (or to an
// included .inc) can leave a stale binary. A generated C file that carries
// a hash of every header makes such an edit a cache miss; the per-file
// caches then recompile just the files that include what changed.
fn headerStamp(b: *std.Build) std.Build.LazyPath {
    var h = std.hash.Wyhash.init(0);
    for ([_][]const u8{ "src", "tests", "tools" }) |dir| {
        var d = b.build_root.handle.openDir(dir, .{ .iterate = true }) catch continue;
        defer d.close();
        var walker = d.walk(b.allocator) catch @panic("oom");
        defer walker.deinit();
        var names = std.ArrayList([]const u8).init(b.allocator);
        while (walker.next() catch null) |entry| {
            if (entry.kind != .file) continue;
            if (!std.mem.endsWith(u8, entry.path, ".h") and !std.mem.endsWith(u8, entry.path, ".inc")) continue;
            names.append(b.dupe(entry.path)) catch @panic("oom");
        }
        std.mem.sort([]const u8, names.items, {}, struct {
            fn lt(_: void, a: []const u8, c: []const u8) bool {
                return std.mem.lessThan(u8, a, c);
            }
        }.lt);
        for (names.items) |name| {
            const data = d.readFileAlloc(b.allocator, name, 1 << 26) catch @panic("cannot read a header");
            h.update(name);
            h.update(data);
        }
    }
    const wf = b.addWriteFiles();
    return wf.add("header_stamp.c", b.fmt("/* headers: {x} */\ntypedef int spool_header_stamp_t;\n", .{h.final()}));
}

const Ctx = struct {
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.OptimizeMode,
    sanitize: bool,
    fuzz: bool,
    flags: []const []const u8,
    stamp: std.Build.LazyPath,
};

fn linkDeps(ctx: Ctx, c: *std.Build.Step.Compile, with_test_libs: bool) void {
    c.linkLibC();
    c.addLibraryPath(.{ .cwd_relative = "/usr/lib/x86_64-linux-gnu" });
    for (system_libs) |l| c.linkSystemLibrary2(l, .{ .use_pkg_config = .no });
    if (with_test_libs) for (test_libs) |l| c.linkSystemLibrary2(l, .{ .use_pkg_config = .no });
    if (ctx.fuzz) {
        // libFuzzer is C++: link Debian's libstdc++ (Zig would offer its own libc++).
        c.addObjectFile(.{ .cwd_relative = fuzzer_runtime });
        c.addObjectFile(.{ .cwd_relative = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6" });
    }
    if (ctx.sanitize) {
        c.addObjectFile(.{ .cwd_relative = asan_runtime });
        c.linkSystemLibrary2("gcc_s", .{ .use_pkg_config = .no });
        c.linkSystemLibrary2("dl", .{ .use_pkg_config = .no });
        c.linkSystemLibrary2("rt", .{ .use_pkg_config = .no });
        c.rdynamic = true;
    }
}

fn program(ctx: Ctx, core: *std.Build.Step.Compile, name: []const u8, files: []const []const u8) *std.Build.Step.Compile {
    const exe = ctx.b.addExecutable(.{ .name = name, .target = ctx.target, .optimize = ctx.optimize });
    exe.root_module.sanitize_c = if (ctx.sanitize) false else null;
    exe.addCSourceFiles(.{ .files = files, .flags = ctx.flags });
    exe.addCSourceFile(.{ .file = ctx.stamp, .flags = ctx.flags });
    exe.addIncludePath(ctx.b.path("src"));
    exe.addIncludePath(ctx.b.path("tests"));
    exe.linkLibrary(core);
    linkDeps(ctx, exe, !std.mem.eql(u8, name, "spool"));
    ctx.b.installArtifact(exe);
    return exe;
}

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{ .default_target = .{
        .cpu_arch = .x86_64,
        .os_tag = .linux,
        .abi = .gnu,
        .glibc_version = .{ .major = 2, .minor = 36, .patch = 0 },
    } });
    const optimize = b.standardOptimizeOption(.{});
    const fuzz = b.option(bool, "fuzz", "build only the libFuzzer targets in tools/fuzz (with ASan + UBSan)") orelse false;
    const sanitize = fuzz or (b.option(bool, "sanitize", "build with AddressSanitizer and UBSan") orelse false);

    var flags = std.ArrayList([]const u8).init(b.allocator);
    flags.appendSlice(&.{
        "-std=gnu11",          "-Wall",       "-Wextra",                        "-Werror", "-Wno-unused-parameter",
        "-fno-omit-frame-pointer", "-D_GNU_SOURCE", "-idirafter", "/usr/include", "-idirafter",
        "/usr/include/x86_64-linux-gnu",
    }) catch @panic("oom");
    if (sanitize) flags.appendSlice(&.{
        "-fsanitize=undefined", "-fsanitize=address", "-fno-sanitize-trap=all", "-DSPOOL_SANITIZE=1",
        // Checks newer than the LLVM 14 runtime we link:
        "-fno-sanitize=function",
    }) catch @panic("oom");
    if (fuzz) flags.append("-fsanitize=fuzzer-no-link") catch @panic("oom");
    const stamp = headerStamp(b);
    const ctx = Ctx{ .b = b, .target = target, .optimize = optimize, .sanitize = sanitize, .fuzz = fuzz, .flags = flags.items, .stamp = stamp };

    const core = b.addStaticLibrary(.{ .name = "spoolcore", .target = target, .optimize = optimize });
    core.root_module.sanitize_c = if (sanitize) false else null;
    core.addCSourceFiles(.{ .files = collectC(b, "src", &.{"src/main.c"}), .flags = flags.items });
    core.addCSourceFile(.{ .file = stamp, .flags = flags.items });
    core.linkLibC();

    if (fuzz) {
        for (collectC(b, "tools/fuzz", &.{})) |f| {
            const name = b.fmt("fuzz-{s}", .{std.fs.path.stem(f)});
            _ = program(ctx, core, name, b.allocator.dupe([]const u8, &.{f}) catch @panic("oom"));
        }
        return;
    }

    _ = program(ctx, core, "spool", &.{"src/main.c"});
    const tests = program(ctx, core, "spool-test", collectC(b, "tests", &.{"tests/e2e"}));
    for (collectC(b, "tools/bench", &.{})) |f| {
        const base = std.fs.path.stem(f);
        _ = program(ctx, core, b.fmt("bench-{s}", .{base}), b.allocator.dupe([]const u8, &.{f}) catch @panic("oom"));
    }

    const run = b.addRunArtifact(tests);
    if (b.args) |args| run.addArgs(args);
    b.step("test", "run the unit tests").dependOn(&run.step);
}
