document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,asc=th.dataset.dir!=='asc';
t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=asc?'asc':'desc';
function k(r){var c=r.cells[i];if(!c)return'';var v=c.dataset.v;if(v!==undefined&&v!==''&&!isNaN(+v))return +v;
return c.textContent.trim().toLowerCase()}
Array.prototype.slice.call(b.rows).sort(function(x,y){var p=k(x),q=k(y);var s=(typeof p==='number'&&
typeof q==='number')?p-q:String(p).localeCompare(String(q));return asc?s:-s}).forEach(function(r){b.appendChild(r)});
});});
