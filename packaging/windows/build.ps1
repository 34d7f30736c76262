# Build Postbridge for Windows: the one-folder app, its self-test, and the Inno Setup installer.
#
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 [-SkipInstaller]
#
# Needs uv and, for the installer, Inno Setup 6.3+ (iscc.exe on PATH or in its default folder).
# Signing is not done here: see packaging\README.md ("Windows: signing").
# UNTESTED: written alongside the Linux build (packaging/linux/build.sh), which CI runs; the
# steps are the same, with Windows paths.
param([switch]$SkipInstaller)
$ErrorActionPreference = "Stop"

$Root = (Resolve-Path "$PSScriptRoot\..\..").Path
$Out = Join-Path $Root "dist"
$BuildEnv = Join-Path $Root "build\windows-env"

Write-Host "=== build environment: runtime dependencies + PyInstaller ($BuildEnv)"
$env:UV_PROJECT_ENVIRONMENT = $BuildEnv
uv sync --project $Root --locked --no-install-project --no-default-groups --group packaging
if ($LASTEXITCODE -ne 0) { throw "uv sync failed" }
Remove-Item Env:\UV_PROJECT_ENVIRONMENT
$Python = Join-Path $BuildEnv "Scripts\python.exe"

Write-Host "=== PyInstaller: packaging\postbridge.spec"
Push-Location $Root
try {
    & $Python -m PyInstaller --noconfirm --clean --log-level WARN `
        --distpath $Out --workpath (Join-Path $Root "build\windows-work") packaging\postbridge.spec
    if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }
} finally { Pop-Location }

$App = Join-Path $Out "Postbridge"
$Size = (Get-ChildItem $App -Recurse -File | Measure-Object -Property Length -Sum).Sum / 1MB
Write-Host ("built {0}: {1:N0} MB" -f $App, $Size)

Write-Host "=== self-test (the console twin prints; Postbridge.exe itself is windowed)"
$env:QT_QPA_PLATFORM = "offscreen"
& (Join-Path $App "postbridge-cli.exe") --self-test
$SelfTest = $LASTEXITCODE
Remove-Item Env:\QT_QPA_PLATFORM
if ($SelfTest -ne 0) { throw "the frozen self-test failed" }

if (-not $SkipInstaller) {
    $Iscc = Get-Command iscc.exe -ErrorAction SilentlyContinue
    $IsccPath = if ($Iscc) { $Iscc.Source } else { "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe" }
    if (-not (Test-Path $IsccPath)) { throw "Inno Setup 6 (ISCC.exe) not found; install it or pass -SkipInstaller" }
    Write-Host "=== Inno Setup: packaging\windows\postbridge.iss"
    & $IsccPath (Join-Path $Root "packaging\windows\postbridge.iss")
    if ($LASTEXITCODE -ne 0) { throw "ISCC failed" }
    Get-ChildItem (Join-Path $Out "windows\*.exe") | ForEach-Object { Write-Host "installer: $($_.FullName)" }
}
